package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Dir is a directory of PEM files: ca.pem and ca-key.pem, and <name>.pem and <name>-key.pem
// for each certificate issued.
type Dir string

// CAFile is the CA certificate clients trust.
func (d Dir) CAFile() string { return filepath.Join(string(d), "ca.pem") }

// CertFile and KeyFile are a certificate's files.
func (d Dir) CertFile(name string) string { return filepath.Join(string(d), name+".pem") }

// KeyFile is the private key of the certificate name.
func (d Dir) KeyFile(name string) string { return filepath.Join(string(d), name+"-key.pem") }

// validity of what Ensure makes: long, since nothing renews them (Ensure issues a new
// certificate only when one is missing, does not cover its hosts, or has expired).
const validity = 10 * 365 * 24 * time.Hour

// Ensure makes the CA if it is missing, and a server certificate name for hosts (DNS names or
// IP addresses) signed by it if that is missing or does not cover every host; existing files
// are kept, so that clients that trust the CA keep working across restarts.
func (d Dir) Ensure(name string, hosts []string) error {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return fmt.Errorf("tls %s: %w", d, err)
	}
	ca, caKey, err := d.loadOrMakeCA()
	if err != nil {
		return err
	}
	if cert, err := readCert(d.CertFile(name)); err == nil && covers(cert, hosts) && cert.CheckSignatureFrom(ca) == nil {
		if _, err := tls.LoadX509KeyPair(d.CertFile(name), d.KeyFile(name)); err == nil {
			return nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"Anchorline"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("tls: issue %s: %w", name, err)
	}
	return writePair(d.CertFile(name), d.KeyFile(name), der, key)
}

func (d Dir) loadOrMakeCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cert, certErr := readCert(d.CAFile())
	key, keyErr := readKey(d.KeyFile("ca"))
	if certErr == nil && keyErr == nil {
		return cert, key, nil
	}
	if !errors.Is(certErr, fs.ErrNotExist) && certErr != nil {
		return nil, nil, fmt.Errorf("tls: %s: %w (delete the directory to have a new CA made; clients must then trust the new one)", d.CAFile(), certErr)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Anchorline CA", Organization: []string{"Anchorline"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: make CA: %w", err)
	}
	if err := writePair(d.CAFile(), d.KeyFile("ca"), der, key); err != nil {
		return nil, nil, err
	}
	cert, err = x509.ParseCertificate(der)
	return cert, key, err
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // crypto/rand does not fail
	return n
}

func covers(cert *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			return false
		}
	}
	return time.Now().Before(cert.NotAfter)
}

func writePair(certFile, keyFile string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	return nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return x509.ParseCertificate(blk.Bytes)
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM key", path)
	}
	return x509.ParseECPrivateKey(blk.Bytes)
}

// ServerConfig is the TLS configuration of a server with the certificate name of d.
func (d Dir) ServerConfig(name string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(d.CertFile(name), d.KeyFile(name))
	if err != nil {
		return nil, fmt.Errorf("tls %s: %w", d.CertFile(name), err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// ClientConfig is a client TLS configuration that trusts only the CA in caFile.
func ClientConfig(caFile string) (*tls.Config, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls.ca %s: %w", caFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls.ca %s: no PEM certificate in it", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
