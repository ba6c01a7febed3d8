package harness

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"
)

// KillPlugin sends SIGKILL to the plugin processes the server started (on
// a dev or file server, one: the plugin is multiplexed) and answers how
// many there were, so a test can see what a plugin crash leaves behind.
// The server starts the plugin again on the next request to a mount of it
// (and calls its InitializeFunc). It returns once the server has reaped
// them, and fails the test when no plugin process runs. Linux only.
func (v *Vault) KillPlugin(tb testing.TB) int {
	tb.Helper()
	v.mu.Lock()
	cmd := v.cmd
	v.mu.Unlock()
	if cmd == nil {
		tb.Fatal("harness: KillPlugin: the server is not running")
	}
	pids, err := childProcesses(cmd.Process.Pid, v.Plugin.Name)
	if err != nil {
		tb.Fatalf("harness: KillPlugin: %v", err)
	}
	if len(pids) == 0 {
		tb.Fatalf("harness: KillPlugin: no %s process runs under the server", v.Plugin.Name)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			tb.Fatalf("harness: KillPlugin: killing %d: %v", pid, err)
		}
	}
	// Until the server has reaped them it may still send a request to a
	// dead process and fail it instead of starting the plugin again.
	deadline := time.Now().Add(stopTimeout)
	for _, pid := range pids {
		for exists(pid) {
			if time.Now().After(deadline) {
				tb.Fatalf("harness: KillPlugin: the server did not reap plugin process %d within %s", pid, stopTimeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return len(pids)
}

// exists reports whether process pid exists (a zombie included).
func exists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}
