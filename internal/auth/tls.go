package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// ErrPlaintext is returned when a connection would carry credentials or
// requests in plaintext over a non-loopback network without --insecure.
var ErrPlaintext = errors.New("plaintext gRPC is allowed only on loopback or with --insecure")

// IsLoopback reports whether addr (host:port) names the loopback interface.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ClientTLS says how a client reaches the metaserver.
type ClientTLS struct {
	// CAFile holds the PEM CA certificates that sign the metaserver's
	// certificate (a private CA); TLS is used whenever it is set.
	CAFile string
	// TLS uses TLS with the system's roots even on loopback.
	TLS bool
	// Insecure allows plaintext to a non-loopback address.
	Insecure bool
}

// DialCredentials returns the transport credentials for addr (one address,
// or several separated by commas) and whether they are secure: TLS when a
// CA or TLS is asked for, or an address is not loopback; plaintext on
// loopback, or anywhere with Insecure.
func (c ClientTLS) DialCredentials(addr string) (grpc.DialOption, bool, error) {
	switch {
	case c.CAFile != "":
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, false, fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, false, fmt.Errorf("--ca %s: no PEM certificates", c.CAFile)
		}
		return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})), true, nil
	case c.TLS:
		return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})), true, nil
	case c.Insecure || AllLoopback(addr):
		return grpc.WithTransportCredentials(insecure.NewCredentials()), false, nil
	}
	return nil, false, fmt.Errorf("%w: %s (give --ca for a private CA, or --insecure)", ErrPlaintext, addr)
}

// ServerCredentials loads the metaserver's certificate and key.
func ServerCredentials(certFile, keyFile string) (credentials.TransportCredentials, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading TLS certificate: %w", err)
	}
	return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), nil
}
