package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
)

// Log returns the server log so far (every start, appended).
func (v *Vault) Log() string { return v.logSince(0) }

func (v *Vault) logSize() int64 {
	info, err := os.Stat(v.logPath)
	if err != nil {
		return 0
	}
	return info.Size()
}

// logSince returns the log from offset on, at most its last maxLogDump
// bytes.
func (v *Vault) logSince(offset int64) string {
	f, err := os.Open(v.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	size := v.logSize()
	prefix := ""
	if size-offset > maxLogDump {
		offset = size - maxLogDump
		prefix = "...(truncated)\n"
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fmt.Sprintf("(reading log: %v)", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(reading log: %v)", err)
	}
	return prefix + string(b)
}

var portMu sync.Mutex

// handedOut remembers ports given to servers of this process, so two
// servers started at once do not pick the same pair.
var handedOut = map[int]bool{}

// freePortPair returns a port p such that p and p+1 (Vault's cluster
// listener) are free on 127.0.0.1 right now.
func freePortPair() (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1)))
		l.Close()
		if err != nil || handedOut[port] || handedOut[port+1] || port+1 > 65535 {
			if l2 != nil {
				l2.Close()
			}
			continue
		}
		l2.Close()
		handedOut[port], handedOut[port+1] = true, true
		return port, nil
	}
	return 0, errors.New("no free pair of ports on 127.0.0.1")
}
