package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/stack"
)

func authCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "auth",
		Short: "Run the NATS auth callout service: devices connect only as themselves, only while registered",
		Long: `auth answers an external NATS server's (or cluster's) auth callout from the ledger's device
registry: a device connects with its id and a signature by its registered key over the server's
nonce, may publish only on iot.readings.<id>, and is disconnected when it is revoked. Run
` + "`auth init`" + ` first and include the auth.conf it writes from the server's configuration;
auth reads the callout issuer and its own seeds from nats.auth_dir. Any number may run (one queue
group); dev runs one inside.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			l, err := remoteLedger(cfg, log)
			if err != nil {
				return err
			}
			tlsOpts, err := stack.NATSTLS(cfg)
			if err != nil {
				return badInput(err)
			}
			a, err := stack.StartAuth(cmd.Context(), auth.Setup{Dir: cfg.AuthDir()}, cfg.NATS.URL, l, log, tlsOpts...)
			if err != nil {
				return err
			}
			defer a.Close()
			log.Info("anchorline auth is running", "nats", cfg.NATS.URL, "auth_dir", cfg.AuthDir())
			return a.Run(cmd.Context())
		},
	}
	c.AddCommand(&cobra.Command{
		Use:   "init",
		Short: "Write the broker's identity setup under nats.auth_dir: service seeds, callout issuer, auth.conf",
		Long: `init creates, under nats.auth_dir (default data_dir/nats-auth), one nkey seed per service role
(ingest, anchoring, simulator, admin, and auth's own two), the callout issuer's account seed, and
auth.conf: the accounts, the services' users with their permissions, and the auth callout block.
Existing seeds are kept. Include auth.conf from each NATS server's configuration, give each
service its seed file (nats.credentials), and run ` + "`anchorline auth`" + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := load(cmd)
			if err != nil {
				return err
			}
			s, err := auth.Init(cfg.AuthDir())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", s.ConfFile())
			for _, r := range auth.Roles {
				fmt.Fprintf(cmd.OutOrStdout(), "  %-9s %s\n", r, s.File(r))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "include %s from the NATS server's configuration, then run `anchorline auth`\n", s.ConfFile())
			return nil
		},
	})
	return c
}
