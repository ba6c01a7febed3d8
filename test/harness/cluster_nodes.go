package harness

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Len is the number of nodes.
func (c *Cluster) Len() int { return len(c.nodes) }

// Node returns node i, for its Addr, Client, CLI and Log. Stop and start
// nodes with StopNode and StartNode: the Vault's own Start and Restart are
// for single servers and would start it with file storage.
func (c *Cluster) Node(i int) *Vault { return c.nodes[i] }

// Active returns the index of the node that answers as active now, or -1
// when none does (during an election, or when every node is stopped).
func (c *Cluster) Active() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, v := range c.nodes {
		if !v.Running() {
			continue
		}
		h, err := v.rawClient("").Sys().HealthWithContext(ctx)
		if err == nil && h.Initialized && !h.Sealed && !h.Standby {
			return i
		}
	}
	return -1
}

// WaitActive waits up to timeout until the running nodes agree on an
// active node, every running standby forwards to it, and the plugin
// answers through every running node; it returns the active node's index.
func (c *Cluster) WaitActive(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	i, err := c.waitActive(ctx)
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	return i
}

// waitActive polls every 200ms until ready (see WaitActive) or ctx ends.
func (c *Cluster) waitActive(ctx context.Context) (int, error) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		active, why := c.ready(ctx)
		if active >= 0 {
			return active, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("cluster not ready: %s: %w", why, ctx.Err())
		case <-tick.C:
		}
	}
}

// ready checks the cluster once: exactly one active node among the
// running ones, the others standbys naming it as leader, and a read of the
// plugin's config answered through each (once the plugin is mounted). It
// answers the active node's index, or -1 and what is not ready.
func (c *Cluster) ready(ctx context.Context) (int, string) {
	active, running := -1, 0
	for i, v := range c.nodes {
		if !v.Running() {
			continue
		}
		running++
		h, err := v.rawClient("").Sys().HealthWithContext(ctx)
		switch {
		case err != nil:
			return -1, fmt.Sprintf("node %d: health: %v", i, err)
		case !h.Initialized || h.Sealed:
			return -1, fmt.Sprintf("node %d is sealed", i)
		case !h.Standby && active >= 0:
			return -1, fmt.Sprintf("nodes %d and %d both answer as active", active, i)
		case !h.Standby:
			active = i
		}
	}
	if running == 0 {
		return -1, "no node is running"
	}
	if active < 0 {
		return -1, "no node is active"
	}
	for i, v := range c.nodes {
		if !v.Running() {
			continue
		}
		leader, err := v.Client().Sys().LeaderWithContext(ctx)
		if err != nil {
			return -1, fmt.Sprintf("node %d: sys/leader: %v", i, err)
		}
		if leader.LeaderAddress != c.nodes[active].Addr {
			return -1, fmt.Sprintf("node %d names leader %q, not node %d", i, leader.LeaderAddress, active)
		}
		if !c.mounted() {
			continue
		}
		// A raw read: the api client answers a 404 (a standby serving
		// reads that has not loaded the new mount yet) as no secret and
		// no error.
		resp, err := v.Client().Logical().ReadRawWithContext(ctx, c.Mount+"/config")
		if resp != nil {
			resp.Body.Close()
		}
		if err != nil {
			return -1, fmt.Sprintf("node %d: reading %s/config: %v", i, c.Mount, err)
		}
		if resp == nil || resp.StatusCode != 200 {
			return -1, fmt.Sprintf("node %d: reading %s/config: no 200 answer", i, c.Mount)
		}
	}
	return active, ""
}

// mounted reports whether the plugin is mounted yet (StartCluster mounts it
// last).
func (c *Cluster) mounted() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, v := range c.nodes {
		if !v.Running() {
			continue
		}
		if _, err := v.Client().Sys().GetMountWithContext(ctx, c.Mount); err == nil {
			return true
		}
	}
	return false
}

// StopNode stops node i gracefully (SIGTERM, as a service manager would):
// an active node steps down, which tears its mounts down (the plugin's
// Clean runs) before the process exits. Its data is kept for StartNode.
func (c *Cluster) StopNode(tb testing.TB, i int) {
	tb.Helper()
	c.nodes[i].stop()
}

// KillNode kills node i and the plugin processes it started (SIGKILL), as a
// crash would: nothing runs on the way down.
func (c *Cluster) KillNode(tb testing.TB, i int) {
	tb.Helper()
	cmd, done := c.nodes[i].detach()
	if cmd == nil {
		return
	}
	killGroup(cmd.Process)
	select {
	case <-done:
	case <-time.After(stopTimeout):
		tb.Fatalf("harness: node %d did not exit after SIGKILL", i)
	}
}

// StartNode starts a stopped node on its data and ports, unseals it and
// waits until it has rejoined as a standby (or, when it is the only node
// running, until it is active) and the cluster is ready (see WaitActive).
func (c *Cluster) StartNode(tb testing.TB, i int) {
	tb.Helper()
	v := c.nodes[i]
	if v.Running() {
		tb.Fatalf("harness: node %d is running", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), nodeStartTimeout)
	defer cancel()
	offset := v.logSize()
	err := c.spawn(i)
	if err == nil {
		err = v.waitResponding(ctx)
	}
	if err == nil {
		err = c.unseal(ctx, i)
	}
	if err == nil {
		_, err = c.waitActive(ctx)
	}
	if err != nil {
		tb.Fatalf("harness: starting node %d: %v\nnode %d log:\n%s", i, err, i, v.logSince(offset))
	}
}

// Sync waits until every running node has applied the raft log up to the
// active node's commit index at the time of the call, so a read through any
// node sees what was written before (through any node). OpenBao standbys
// serve reads from their own copy of the data, which is eventually
// consistent: a write forwarded to the active node may not be visible on a
// standby for a moment. On Vault, whose standbys forward every request, the
// wait ends at once in practice.
func (c *Cluster) Sync(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	active := c.Active()
	if active < 0 {
		tb.Fatalf("harness: Sync: no active node")
	}
	leader, err := c.nodes[active].rawClient("").Sys().LeaderWithContext(ctx)
	if err != nil {
		tb.Fatalf("harness: Sync: sys/leader of node %d: %v", active, err)
	}
	want := leader.RaftCommittedIndex
	for i, v := range c.nodes {
		if !v.Running() {
			continue
		}
		var last uint64
		err := v.poll(ctx, "applying the raft log", func() (bool, error) {
			l, err := v.rawClient("").Sys().LeaderWithContext(ctx)
			if err != nil {
				return false, nil
			}
			last = l.RaftAppliedIndex
			return last >= want, nil
		})
		if err != nil {
			tb.Fatalf("harness: Sync: node %d: %v (applied index %d, want %d)", i, err, last, want)
		}
	}
}
