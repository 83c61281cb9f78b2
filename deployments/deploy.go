package deployments

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// files are the embedded configuration and monitoring files, at their paths in this folder.
//
//go:embed config/*.yaml prometheus/*.yml grafana/*.json
var files embed.FS

// reference is the configuration file that lists every key with its default; it is no role's.
const reference = "anchorline"

// Roles are the services that have a configuration file of their own, config/<role>.yaml,
// sorted: anchor, api, auth, ingest, rules.
func Roles() []string {
	entries, err := fs.ReadDir(files, "config")
	if err != nil {
		return nil // cannot happen: the directory is embedded
	}
	var roles []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".yaml"); ok && name != reference {
			roles = append(roles, name)
		}
	}
	slices.Sort(roles)
	return roles
}

// ConfigFile returns config/<role>.yaml: the configuration of one of Roles, or with role
// "anchorline" the file of every key with its default. The files name the hosts of the compose
// topology (nats-1, clickhouse-1, ledger-1, ...); override the addresses for another layout
// (ANCHORLINE_* variables or flags). An unknown role is an error wrapping fs.ErrNotExist.
func ConfigFile(role string) ([]byte, error) {
	if role == "" || strings.ContainsAny(role, "/\\.") {
		return nil, fmt.Errorf("deployments: role %q: %w (roles: %s)", role, fs.ErrNotExist, strings.Join(Roles(), ", "))
	}
	b, err := files.ReadFile(path.Join("config", role+".yaml"))
	if err != nil {
		return nil, fmt.Errorf("deployments: role %q: %w (roles: %s)", role, fs.ErrNotExist, strings.Join(Roles(), ", "))
	}
	return b, nil
}

// Files is the embedded tree, read-only: config/*.yaml, prometheus/prometheus.yml and
// prometheus/alerts.yml (the rule file prometheus.yml names beside it), grafana/anchorline.json.
func Files() fs.FS { return files }
