package harness_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

// TestCluster (about 25s) starts a three-node raft cluster and checks what
// the HA acceptance test relies on: one active node, the plugin binary in
// every node's own plugin directory, a write through a standby readable
// through every node, a new active node after the active one stops, and a
// stopped node rejoining as a standby, and the same after a crash
// (KillNode).
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three Vault servers")
	}
	start := time.Now()
	c := harness.StartCluster(t, 3)
	t.Logf("cluster up in %s", time.Since(start).Round(100*time.Millisecond))

	active := c.Active()
	if active < 0 || c.WaitActive(t, 10*time.Second) != active {
		t.Fatalf("Active() = %d; want the node WaitActive names", active)
	}
	for i := 0; i < c.Len(); i++ {
		n := c.Node(i)
		if _, err := os.Stat(filepath.Join(n.Plugin.Dir, n.Plugin.Name)); err != nil {
			t.Errorf("node %d: plugin binary: %v", i, err)
		}
		if n.Token != c.Token || n.Mount != harness.DefaultMount {
			t.Errorf("node %d: token/mount %q/%q; want the cluster's", i, n.Token, n.Mount)
		}
	}

	standby := (active + 1) % c.Len()
	write(t, c.Node(standby), "creds/through-standby", map[string]any{"type": "api_key", "api_key": "cl-SECRET"})
	c.Sync(t) // OpenBao standbys serve reads from their own, eventually consistent copy
	for i := 0; i < c.Len(); i++ {
		read(t, c.Node(i), "creds/through-standby")
	}

	stopped := time.Now()
	c.StopNode(t, active)
	next := c.WaitActive(t, 60*time.Second)
	t.Logf("node %d active %s after node %d stopped", next, time.Since(stopped).Round(100*time.Millisecond), active)
	if next == active {
		t.Fatalf("the stopped node %d is still named active", active)
	}
	read(t, c.Node(next), "creds/through-standby")

	c.StartNode(t, active)
	if got := c.Active(); got != next {
		t.Errorf("after node %d rejoined, Active() = %d; want %d", active, got, next)
	}
	read(t, c.Node(active), "creds/through-standby")

	// A crash of the active node: another one takes over.
	c.KillNode(t, next)
	after := c.WaitActive(t, 60*time.Second)
	if after == next {
		t.Fatalf("the killed node %d is still named active", next)
	}
	read(t, c.Node(after), "creds/through-standby")
	c.StartNode(t, next)
	if out, err := c.Node(active).CLI(t, "read", "-field=type", harness.DefaultMount+"/creds/through-standby"); err != nil || out != "api_key" {
		t.Errorf("CLI read through the rejoined node: %q, %v", out, err)
	}
}

func write(tb testing.TB, v *harness.Vault, path string, data map[string]any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := v.Client().Logical().WriteWithContext(ctx, v.Mount+"/"+path, data); err != nil {
		tb.Fatalf("write %s through %s: %v", path, v.Addr, err)
	}
}

func read(tb testing.TB, v *harness.Vault, path string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := v.Client().Logical().ReadWithContext(ctx, v.Mount+"/"+path)
	if err != nil || s == nil {
		tb.Fatalf("read %s through %s: %v, %v", path, v.Addr, s, err)
	}
}
