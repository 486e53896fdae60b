package auth

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// SplitMetaservers splits a --metaserver value, one host:port or several
// separated by commas (issue 21: several metaservers over one store, one
// of them the writer), and checks each address.
func SplitMetaservers(v string) ([]string, error) {
	var addrs []string
	for _, a := range strings.Split(v, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("metaserver address %q: want host:port", a)
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no metaserver address in %q", v)
	}
	return addrs, nil
}

var targetSeq atomic.Uint64

// MetaserverTarget returns the gRPC target of a --metaserver value and the
// dial options it needs. One address is dialled as is ("passthrough:///"
// prefixed). Several are given to a resolver of their own, under gRPC's
// pick_first policy: the connection goes to the first address that
// accepts it, and when it breaks, the next connection attempt tries them
// in order again, so clients move to whichever metaserver is live (a
// standby only listens once it holds the store). TLS checks each
// address's own host name.
func MetaserverTarget(v string) (string, []grpc.DialOption, error) {
	addrs, err := SplitMetaservers(v)
	if err != nil {
		return "", nil, err
	}
	if len(addrs) == 1 {
		return "passthrough:///" + addrs[0], nil, nil
	}
	r := manual.NewBuilderWithScheme(fmt.Sprintf("kiln-metaservers-%d", targetSeq.Add(1)))
	state := resolver.State{}
	for _, a := range addrs {
		host, _, _ := net.SplitHostPort(a)
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a, ServerName: host})
	}
	r.InitialState(state)
	return r.Scheme() + ":///metaservers", []grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"pick_first":{}}]}`),
	}, nil
}

// AllLoopback reports whether every address of a --metaserver value (one,
// or several separated by commas) is loopback.
func AllLoopback(v string) bool {
	addrs, err := SplitMetaservers(v)
	if err != nil {
		return IsLoopback(v)
	}
	for _, a := range addrs {
		if !IsLoopback(a) {
			return false
		}
	}
	return true
}
