package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
)

func ruleCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "rule",
		Short: "Manage automation rules: versions on the ledger, signed by ledger.admin_key (schemas/rule.md)",
	}
	c.AddCommand(rulePutCmd(), ruleRetireCmd(), ruleListCmd(), ruleShowCmd())
	return c
}

func rulePutCmd() *cobra.Command {
	var wait time.Duration
	c := &cobra.Command{
		Use:   "put FILE",
		Short: "Commit a rule's next version from a YAML or JSON file; a condition that does not compile is refused with its line and column",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return badInput(err)
			}
			r, err := rule.ParseFile(data)
			if err != nil {
				return badInput(fmt.Errorf("%s: %w", args[0], err))
			}
			// Compile before anything reaches the ledger (with the version put will use).
			version := r.Version
			if r.Version == 0 {
				r.Version = 1
			}
			if _, err := rule.Compile(r); err != nil {
				return badInput(fmt.Errorf("%s: %w", args[0], err))
			}
			r.Version = version
			return submitRule(cmd, entry.OpPut, r, wait)
		},
	}
	c.Flags().DurationVar(&wait, "wait", defaultSubmitWait, "how long to wait for the block that includes the entry")
	return c
}

func ruleRetireCmd() *cobra.Command {
	var wait time.Duration
	c := &cobra.Command{
		Use:   "retire ID",
		Short: "Take a rule out of force from the block that includes the entry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !reading.ValidDeviceID(args[0]) {
				return badInput(fmt.Errorf("rule id %q: want 1 to 64 of A-Z a-z 0-9 _ -", args[0]))
			}
			return submitRule(cmd, entry.OpRetire, rule.Rule{ID: args[0]}, wait)
		},
	}
	c.Flags().DurationVar(&wait, "wait", defaultSubmitWait, "how long to wait for the block that includes the entry")
	return c
}

// submitRule commits a rule entry (op) for r signed by ledger.admin_key; a zero r.Version is
// the rule's next version on the ledger.
func submitRule(cmd *cobra.Command, op string, r rule.Rule, wait time.Duration) error {
	_, l, admin, err := adminLedger(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	rules, _, err := l.Rules(ctx, 0)
	if err != nil {
		return err
	}
	next := uint64(1)
	var cur *ledger.Rule
	for i := range rules {
		if rules[i].Record.ID == r.ID {
			cur = &rules[i]
			next = rules[i].Record.Version + 1
		}
	}
	switch {
	case op == entry.OpRetire && (cur == nil || !cur.InForce()):
		return badInput(fmt.Errorf("rule %s is not in force: nothing to retire (see anchorline rule list)", r.ID))
	case r.Version == 0:
		r.Version = next
	case r.Version != next:
		return badInput(fmt.Errorf("rule %s: version %d, but the ledger's next version is %d: leave version out, or set it to %d", r.ID, r.Version, next, next))
	}
	e, err := entry.NewRule(admin, op, r, time.Now())
	if err != nil {
		return badInput(err)
	}
	rc, err := submitEntry(ctx, l, e, wait)
	if err != nil {
		return fmt.Errorf("rule %s %s version %d: %w", op, r.ID, r.Version, err)
	}
	if op == entry.OpRetire {
		fmt.Fprintf(cmd.OutOrStdout(), "retired rule %s (version %d) at ledger height %d, log index %d: out of force from that block\n", r.ID, r.Version, rc.Height, rc.LogIndex)
		return nil
	}
	fmt.Fprintf(cmd.OutOrStdout(), "put rule %s version %d at ledger height %d, log index %d: in force from that block\n", r.ID, r.Version, rc.Height, rc.LogIndex)
	return nil
}

func ruleListCmd() *cobra.Command {
	var asJSON, all bool
	var height int64
	c := &cobra.Command{
		Use:   "list [--all] [--height H] [--json]",
		Short: "List the rules in force (--all: retired ones too) at the latest height or at --height",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, l, err := ledgerClient(cmd)
			if err != nil {
				return err
			}
			rules, h, err := l.Rules(cmd.Context(), height)
			if err != nil {
				return err
			}
			var shown []ledger.Rule
			for _, r := range rules {
				if all || r.InForce() {
					shown = append(shown, r)
				}
			}
			if asJSON {
				out := make([]ruleView, 0, len(shown))
				for _, r := range shown {
					out = append(out, viewOf(r))
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"height": h, "rules": out})
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "ID\tVERSION\tSTATUS\tSINCE\tLOG INDEX\tSELECTS\tCONDITION\n")
			for _, r := range shown {
				fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%d\t%s\t%s\n", r.Record.ID, r.Record.Version, r.Record.Status, r.Record.Height, r.Record.Index, selects(r.Rule), condition(r.Rule))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d of %d rules at ledger height %d\n", len(shown), len(rules), h)
			return nil
		},
	}
	c.Flags().BoolVar(&all, "all", false, "list retired rules too")
	c.Flags().Int64Var(&height, "height", 0, "the ledger height to list the rules of (0: the latest)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func ruleShowCmd() *cobra.Command {
	var height int64
	c := &cobra.Command{
		Use:   "show ID [--height H]",
		Short: "Print a rule's version in force (or retired) with its ledger record, as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, l, err := ledgerClient(cmd)
			if err != nil {
				return err
			}
			r, _, err := l.RuleAt(cmd.Context(), args[0], height)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(viewOf(r))
		},
	}
	c.Flags().Int64Var(&height, "height", 0, "the ledger height (0: the latest)")
	return c
}

// ruleView is how rule list --json and rule show print a rule.
type ruleView struct {
	ID       string    `json:"id"`
	Version  uint64    `json:"version"`
	Status   string    `json:"status"`
	Height   uint64    `json:"height"`    // the block that included the entry
	LogIndex uint64    `json:"log_index"` // the entry's
	Entry    string    `json:"entry"`     // the entry's log leaf, hex
	Rule     rule.Rule `json:"rule"`
}

func viewOf(r ledger.Rule) ruleView {
	return ruleView{ID: r.Record.ID, Version: r.Record.Version, Status: r.Record.Status, Height: r.Record.Height, LogIndex: r.Record.Index,
		Entry: hex.EncodeToString(r.Record.Entry), Rule: r.Rule}
}

func selects(r rule.Rule) string {
	var parts []string
	if len(r.Devices) > 0 {
		parts = append(parts, fmt.Sprintf("%d devices", len(r.Devices)))
	}
	for k, v := range r.Tags {
		parts = append(parts, k+"="+v)
	}
	if len(parts) == 0 {
		return "every device"
	}
	return strings.Join(parts, ", ")
}

func condition(r rule.Rule) string {
	switch {
	case r.Absence():
		return fmt.Sprintf("absent %s", time.Duration(r.AbsentMS)*time.Millisecond)
	case r.When == "":
		return "-"
	}
	c := strings.Join(strings.Fields(r.When), " ")
	if len(c) > 60 {
		c = c[:57] + "..."
	}
	return c
}
