package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/anchorline/anchorline/pipeline/chain"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
	"github.com/anchorline/anchorline/schemas/stream"
)

// Accounts of the broker. Devices and services share App, where the streams live; the auth
// callout service alone is in Auth; System is NATS's system account, which the auth service
// uses to close revoked devices' connections.
const (
	AppAccount    = "APP"
	AuthAccount   = "AUTH"
	SystemAccount = "SYS"
)

// Role names a service credential. Each connects with its own nkey and only the permissions
// of its role (Permissions).
type Role string

// The roles. Devices have no role: each authenticates as itself through the callout.
const (
	RoleAuth      Role = "auth"      // answers the auth callout (Auth account)
	RoleSystem    Role = "system"    // the auth service's system-account connection: connz, kick
	RoleIngest    Role = "ingest"    // reads READINGS, publishes batch records
	RoleAnchoring Role = "anchoring" // reads BATCHES
	RoleRules     Role = "rules"     // reads VERIFIED, publishes events (and commands)
	RoleSimulator Role = "simulator" // publishes readings for any device (load generators, bench)
	RoleAdmin     Role = "admin"     // everything in the App account: operators' tools, bench
)

// Roles lists every role in the order the setup writes them.
var Roles = []Role{RoleAuth, RoleSystem, RoleIngest, RoleAnchoring, RoleRules, RoleSimulator, RoleAdmin}

// InboxPrefix is the reply-subject prefix a role's connection uses (nats.CustomInboxPrefix):
// each role may subscribe only to its own replies.
func InboxPrefix(r Role) string { return "_INBOX_" + string(r) }

// Permissions are the subjects a role may publish to and subscribe to; nil means all (the
// roles alone in their accounts, and admin).
type Permissions struct {
	Publish, Subscribe []string
}

// jsTopology are the JetStream API subjects that create or check a stream and its consumers.
func jsTopology(streamName string, consumers ...string) []string {
	s := []string{"$JS.API.INFO", "$JS.API.STREAM.INFO." + streamName, "$JS.API.STREAM.CREATE." + streamName,
		"$JS.API.STREAM.UPDATE." + streamName}
	for _, c := range consumers {
		s = append(s, "$JS.API.CONSUMER.INFO."+streamName+"."+c, "$JS.API.CONSUMER.CREATE."+streamName+"."+c,
			"$JS.API.CONSUMER.CREATE."+streamName+"."+c+".>", "$JS.API.CONSUMER.DURABLE.CREATE."+streamName+"."+c)
	}
	return s
}

// jsConsume are the subjects that pull from a durable consumer and acknowledge its messages
// (the acks' reply subjects in both the old and the domain-qualified form).
func jsConsume(streamName, consumer string) []string {
	return []string{"$JS.API.CONSUMER.MSG.NEXT." + streamName + "." + consumer,
		"$JS.ACK." + streamName + "." + consumer + ".>", "$JS.ACK.*.*." + streamName + "." + consumer + ".>"}
}

// jsKV are the subjects that create a key-value bucket and read and write its keys.
func jsKV(bucket string) []string {
	s := jsTopology("KV_" + bucket)
	return append(s, "$KV."+bucket+".>", "$JS.API.DIRECT.GET.KV_"+bucket+".>", "$JS.API.STREAM.MSG.GET.KV_"+bucket)
}

// PermissionsOf returns a role's permissions.
func PermissionsOf(r Role) Permissions {
	inbox := InboxPrefix(r) + ".>"
	switch r {
	case RoleIngest:
		pub := jsTopology(stream.Readings, stream.IngestConsumer)
		pub = append(pub, jsTopology(stream.Batches)...)
		pub = append(pub, jsConsume(stream.Readings, stream.IngestConsumer)...)
		// The rules stage's feed: the stream and its shards' consumers ("*": their number is
		// configuration), and the subjects of the verified readings.
		pub = append(pub, jsTopology(stream.Verified, "*")...)
		pub = append(pub, stream.BatchesSubject, stream.VerifiedSubjects, chain.AskSubject, chain.TellSubjectPrefix+">")
		return Permissions{Publish: pub, Subscribe: []string{inbox, chain.AskSubject, chain.TellSubjectPrefix + ">"}}
	case RoleAnchoring:
		pub := jsTopology(stream.Batches, stream.AnchorConsumer)
		pub = append(pub, jsConsume(stream.Batches, stream.AnchorConsumer)...)
		// Retention (anchor.purge_readings): the ingest consumer's ack floor, the records not
		// anchored yet, and the purge of Readings below the low-water mark.
		pub = append(pub, "$JS.API.STREAM.INFO."+stream.Readings, "$JS.API.CONSUMER.INFO."+stream.Readings+"."+stream.IngestConsumer,
			"$JS.API.STREAM.MSG.GET."+stream.Batches, "$JS.API.STREAM.PURGE."+stream.Readings)
		// Erasure (services/erasure): an erased device's messages still in Readings, and its
		// events quoting erased readings in Events, found one by one and deleted with their
		// bytes overwritten.
		pub = append(pub, "$JS.API.STREAM.MSG.GET."+stream.Readings, "$JS.API.STREAM.MSG.DELETE."+stream.Readings,
			"$JS.API.STREAM.INFO."+stream.Events, "$JS.API.STREAM.MSG.GET."+stream.Events, "$JS.API.STREAM.MSG.DELETE."+stream.Events)
		pub = append(pub, jsKV(stream.AnchoringBucket)...)
		// Resolved intents are purged (no delete markers): their stream lists only live ones.
		pub = append(pub, jsKV(stream.AnchorIntentsBucket)...)
		pub = append(pub, "$JS.API.STREAM.PURGE.KV_"+stream.AnchorIntentsBucket)
		return Permissions{Publish: pub, Subscribe: []string{inbox}}
	case RoleRules:
		pub := jsTopology(stream.Verified, "*")
		pub = append(pub, jsConsume(stream.Verified, "*")...)
		pub = append(pub, jsTopology(stream.Events, stream.CommandsConsumer, stream.WebhooksConsumer, stream.EventsStoreConsumer)...)
		pub = append(pub, jsConsume(stream.Events, stream.CommandsConsumer)...)
		pub = append(pub, jsConsume(stream.Events, stream.WebhooksConsumer)...)
		pub = append(pub, jsConsume(stream.Events, stream.EventsStoreConsumer)...)
		// Events; commands, stored as readings of the commander and sent to the devices.
		pub = append(pub, rule.SubjectPrefix+">", stream.ActionsSubjects, reading.Subject(rule.Commander), reading.CommandsSubjectPrefix+">")
		return Permissions{Publish: pub, Subscribe: []string{inbox}}
	case RoleSimulator:
		return Permissions{Publish: []string{stream.ReadingsSubjects}, Subscribe: []string{inbox}}
	}
	return Permissions{}
}

// DevicePermissions are a device's: publish its readings, receive its acknowledgements and its
// commands; nothing else (no JetStream API, no other device's subjects).
func DevicePermissions(device string) Permissions {
	return Permissions{
		Publish:   []string{reading.Subject(device)},
		Subscribe: []string{reading.InboxPrefix(device) + ".>", reading.CommandsSubject(device), reading.CommandsSubject(device) + ".>"},
	}
}

// accountOf is the account a role's user is in.
func accountOf(r Role) string {
	switch r {
	case RoleAuth:
		return AuthAccount
	case RoleSystem:
		return SystemAccount
	}
	return AppAccount
}

// Setup is the broker's side of Anchorline's identity: a directory holding the callout
// issuer's account seed (issuer.nk), one nkey seed per role (<role>.nk, mode 0600) and
// auth.conf, the accounts and auth callout block that a nats-server configuration includes.
type Setup struct {
	Dir string
}

// File is the path of a role's seed file.
func (s Setup) File(r Role) string { return filepath.Join(s.Dir, string(r)+".nk") }

// IssuerFile is the path of the callout issuer's seed (it signs the callout's answers).
func (s Setup) IssuerFile() string { return filepath.Join(s.Dir, "issuer.nk") }

// ConfFile is the path of the nats-server configuration fragment.
func (s Setup) ConfFile() string { return filepath.Join(s.Dir, "auth.conf") }

// Init creates the setup's keys if they are missing (existing ones are kept, so that services
// configured with them keep working) and writes auth.conf from them. It returns the setup.
func Init(dir string) (Setup, error) {
	s := Setup{Dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return s, fmt.Errorf("auth setup %s: %w", dir, err)
	}
	if _, err := loadOrCreate(s.IssuerFile(), nkeys.CreateAccount); err != nil {
		return s, err
	}
	for _, r := range Roles {
		if _, err := loadOrCreate(s.File(r), nkeys.CreateUser); err != nil {
			return s, err
		}
	}
	conf, err := s.conf()
	if err != nil {
		return s, err
	}
	if err := os.WriteFile(s.ConfFile(), []byte(conf), 0o600); err != nil {
		return s, fmt.Errorf("auth setup: %w", err)
	}
	return s, nil
}

// loadOrCreate reads the nkey seed in path, or creates one with create and writes it.
func loadOrCreate(path string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	if b, err := os.ReadFile(path); err == nil {
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
		if err != nil {
			return nil, fmt.Errorf("%s: not an nkey seed: %w (delete it to have a new one made, then restart the services that use it)", path, err)
		}
		return kp, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	kp, err := create()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return kp, nil
}

// Issuer reads the callout issuer's key pair.
func (s Setup) Issuer() (nkeys.KeyPair, error) { return readSeed(s.IssuerFile()) }

// Public returns the public nkey of a role.
func (s Setup) Public(r Role) (string, error) {
	kp, err := readSeed(s.File(r))
	if err != nil {
		return "", err
	}
	return kp.PublicKey()
}

func readSeed(path string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nkey seed %s: %w", path, err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		return nil, fmt.Errorf("nkey seed %s: %w", path, err)
	}
	return kp, nil
}

// conf renders auth.conf: the three accounts with each role's nkey and permissions, the system
// account, and the callout that authenticates every other client (the devices).
func (s Setup) conf() (string, error) {
	issuer, err := s.Issuer()
	if err != nil {
		return "", err
	}
	issuerPub, err := issuer.PublicKey()
	if err != nil {
		return "", err
	}
	users := map[string][]string{}
	var pubs []string
	for _, r := range Roles {
		pub, err := s.Public(r)
		if err != nil {
			return "", err
		}
		pubs = append(pubs, pub)
		users[accountOf(r)] = append(users[accountOf(r)], userBlock(r, pub))
	}
	var b strings.Builder
	b.WriteString("# Anchorline's accounts and auth callout (written by `anchorline auth init`; include it from\n")
	b.WriteString("# the server's configuration). Services authenticate with the nkeys below; every other client\n")
	b.WriteString("# is a device and is answered by `anchorline auth` from the ledger's device registry.\n")
	b.WriteString("accounts {\n")
	for _, acc := range []string{AuthAccount, AppAccount, SystemAccount} {
		fmt.Fprintf(&b, "  %s {\n", acc)
		if acc == AppAccount {
			b.WriteString("    jetstream: enabled\n")
		}
		fmt.Fprintf(&b, "    users: [\n%s    ]\n  }\n", strings.Join(users[acc], ""))
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "system_account: %s\n", SystemAccount)
	b.WriteString("authorization {\n  timeout: 2s\n  auth_callout {\n")
	fmt.Fprintf(&b, "    issuer: %s\n    account: %s\n    auth_users: [ %s ]\n", issuerPub, AuthAccount, strings.Join(pubs, ", "))
	b.WriteString("  }\n}\n")
	return b.String(), nil
}

func userBlock(r Role, pub string) string {
	p := PermissionsOf(r)
	if p.Publish == nil && p.Subscribe == nil {
		return fmt.Sprintf("      { nkey: %s }  # %s\n", pub, r)
	}
	return fmt.Sprintf("      { nkey: %s, permissions: { publish: { allow: %s }, subscribe: { allow: %s } } }  # %s\n",
		pub, quoteList(p.Publish), quoteList(p.Subscribe), r)
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// ServerOptions parses auth.conf into nats-server options, for the embedded server: the caller
// sets where it listens and stores.
func (s Setup) ServerOptions() (*server.Options, error) {
	opts, err := server.ProcessConfigFile(s.ConfFile())
	if err != nil {
		return nil, fmt.Errorf("auth setup %s: %w", s.ConfFile(), err)
	}
	return opts, nil
}

// ConnectOptions are the nats.go options a role connects with: its nkey from its seed file and
// its own inbox prefix.
func ConnectOptions(r Role, seedFile string) ([]nats.Option, error) {
	if !slices.Contains(Roles, r) {
		return nil, fmt.Errorf("auth: unknown role %q", r)
	}
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		return nil, fmt.Errorf("nats credentials %s: %w", seedFile, err)
	}
	return []nats.Option{opt, nats.CustomInboxPrefix(InboxPrefix(r))}, nil
}
