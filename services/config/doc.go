// Package config is Anchorline's runtime configuration: one struct with documented defaults,
// loaded by viper from a YAML file, ANCHORLINE_* environment variables and flags (in viper's
// usual order), and validated up front with errors that name the field and the fix.
package config
