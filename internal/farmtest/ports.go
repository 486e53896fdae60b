package farmtest

import (
	"net"
	"strconv"
	"sync"
	"testing"
)

var (
	portsMu sync.Mutex
	// handedOut keeps a port from being given twice in one test process.
	handedOut = map[int]bool{}
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that this process has not handed out before. The usual race applies:
// another process may take it before the program under test binds it.
func FreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("farmtest: finding a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !handedOut[port] {
			handedOut[port] = true
			return port
		}
	}
	t.Fatalf("farmtest: no fresh free port after 100 tries")
	return 0
}

// FreeAddr returns "127.0.0.1:PORT" for a FreePort.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}
