package main

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/internal/pki"
)

// certName is what a certificate's name may be: a file name of its own in the directory.
var certName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func tlsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "tls",
		Short: "Make a deployment's private CA and its servers' certificates",
		Args:  cobra.NoArgs,
	}
	c.AddCommand(tlsInitCmd())
	return c
}

func tlsInitCmd() *cobra.Command {
	var dir, name, hosts string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Make the CA under --dir once, and a server certificate --name for --hosts signed by it",
		Long: `init makes, under --dir, a private CA (ca.pem, and its key ca-key.pem) if there is none, and a
server certificate NAME.pem with its key NAME-key.pem for every host of --hosts (DNS names or IP
addresses), signed by that CA. Existing files are kept: the CA always, a certificate if it
covers every host of --hosts and has not expired (else it is issued again, by the same CA), so
that clients trusting ca.pem keep working. Run it once per kind of server (NATS, the
validators' RPC, ClickHouse, the services' HTTP), give each server its NAME.pem and
NAME-key.pem and every client ca.pem (tls.ca). ca-key.pem issues certificates every client
trusts: keep it secret, and give it to no server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := tlsInitInput(dir, name, hosts)
			if err != nil {
				return err
			}
			d := pki.Dir(dir)
			if err := d.Ensure(name, list); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "ca\t%s\n", d.CAFile())
			fmt.Fprintf(out, "cert\t%s\thosts %s\n", d.CertFile(name), strings.Join(list, ","))
			fmt.Fprintf(out, "key\t%s\n", d.KeyFile(name))
			fmt.Fprintf(out, "ca key\t%s (keep it secret: it issues certificates every client trusts)\n", d.KeyFile("ca"))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory of the CA and its certificates, made if missing (required)")
	f.StringVar(&name, "name", "", "name of the certificate: NAME.pem and NAME-key.pem (required)")
	f.StringVar(&hosts, "hosts", "", "comma-separated DNS names and IP addresses the certificate is for (required)")
	return cmd
}

// tlsInitInput checks tls init's flags and returns the hosts.
func tlsInitInput(dir, name, hosts string) ([]string, error) {
	switch {
	case dir == "":
		return nil, badInput(errors.New("--dir: name the directory of the CA and its certificates"))
	case name == "":
		return nil, badInput(errors.New("--name: name the certificate (NAME.pem, NAME-key.pem)"))
	case name == "ca":
		return nil, badInput(errors.New("--name ca: that is the CA's own file (ca.pem); choose another name"))
	case !certName.MatchString(name):
		return nil, badInput(fmt.Errorf("--name %q: want letters, digits, '.', '_' and '-' (a file name in --dir)", name))
	case hosts == "":
		return nil, badInput(errors.New("--hosts: give the DNS names or IP addresses the certificate is for, separated by commas"))
	}
	var list []string
	for h := range strings.SplitSeq(hosts, ",") {
		h = strings.TrimSpace(h)
		if h == "" || net.ParseIP(h) == nil && strings.ContainsAny(h, " /:@") {
			return nil, badInput(fmt.Errorf("--hosts %q: %q is not a host; want DNS names or IP addresses (no ports) separated by commas", hosts, h))
		}
		list = append(list, h)
	}
	return list, nil
}
