// Package deployments holds what runs Anchorline beyond one `anchorline dev`: the services'
// configuration files (config/), the Prometheus and Grafana files, the container image
// (docker/), a Docker Compose topology (compose/) and Kubernetes manifests (kubernetes/). The Go
// side embeds the configuration and monitoring files for commands that start a topology
// themselves (ConfigFile, Roles, Files); its tests check the compose file and the manifests
// against the configuration loader, the binary's commands and the Kubernetes API types.
package deployments
