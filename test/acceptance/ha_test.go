package acceptance

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/test/harness"
	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// Timing of TestHACluster. Vault calls the plugin's periodic function on
// the active node only, every minute, the first time a minute after the
// node became active. The OAuth2 server's tokens live haTokenLifetime and
// the engine refreshes them haRefreshAhead before they expire, so a token
// is due 10s after it was issued, and, as it lives less than a minute, the
// token current when the active node stops has always expired by the time
// the new active node runs its first periodic work: it expires during the
// failover.
const (
	haTokenLifetime = 45 * time.Second
	haRefreshAhead  = 35 * time.Second
	// haMinRefreshGap is the least time between two refreshes of one
	// credential: a token is not due before lifetime - refresh_ahead (10s)
	// after it was issued, less the background refresh's jitter (below
	// min(lifetime/10, refresh_ahead) = 4.5s); expires_in is whole seconds
	// and the audit event is recorded after the request, hence the slack.
	// Two nodes refreshing the same expiry would show as a smaller gap.
	haMinRefreshGap = haTokenLifetime - haRefreshAhead - haTokenLifetime/10 - 2*time.Second
	// haPeriodicWait bounds a wait for the active node's next periodic
	// run: at most a minute, plus slack.
	haPeriodicWait = 100 * time.Second
	// haAuditFlushWait is longer than the engine's audit flush period
	// (one second).
	haAuditFlushWait = 2500 * time.Millisecond
	// haPollEvery is how often the waits look.
	haPollEvery = 2 * time.Second
)

// TestHACluster (SLOW: about 2 minutes 10 seconds) runs the engine on a three-node
// Vault cluster with integrated storage (raft) and stops the active node:
//
//   - a credential created through one node reads the same through every
//     other (standbys forward to the active node);
//   - the active node's periodic work refreshes an oauth2 client_credentials
//     token and rotates a generated credential before the failover, and the
//     new active node does both after it, while the old node has rejoined
//     as a standby (three nodes running);
//   - the token that expired during the failover is refreshed once: every
//     request the OAuth2 server saw is the first token read or one
//     successful refresh in the engine's audit trail, each node's
//     refresh_count matches the requests made while it was active, and no
//     two refreshes are closer than a token takes to become due;
//   - no credential and no audit event written before the failover is lost:
//     neither those flushed by an audit query, nor two events left in the
//     engine's in-memory audit buffer, one older than the one-second flush
//     period (written by the engine's flusher) and one written just before
//     the stop (written by the final flush in Clean).
//
// -short skips it.
func TestHACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: a three-node cluster and two periodic runs (about 2 minutes)")
	}
	t.Parallel()
	began := time.Now()
	c := harness.StartCluster(t, 3)
	srv := oauthserver.Start(t, oauthserver.WithAccessTokenLifetime(haTokenLifetime))
	first := c.WaitActive(t, time.Minute)
	active, standby, other := c.Node(first), c.Node((first+1)%3), c.Node((first+2)%3)
	mount := c.Mount
	t.Logf("cluster up in %s; node %d active", time.Since(began).Round(time.Second), first)

	mustWrite(t, haAPI(standby), mount+"/config", map[string]any{
		"insecure_http_hosts": "127.0.0.1", "refresh_ahead": fmt.Sprintf("%ds", int(haRefreshAhead.Seconds())),
	})

	// Static credentials, each created through one node and read through
	// the next.
	keys := map[string]string{} // name -> id
	for i := 0; i < c.Len(); i++ {
		name, secret := newName("ha-key"), fmt.Sprintf("ha-SECRET-%d", i)
		created := mustWrite(t, haAPI(c.Node(i)), mount+"/creds/"+name, map[string]any{"type": "api_key", "api_key": secret})
		c.Sync(t) // OpenBao standbys serve reads from their own copy: eventually consistent
		read := mustRead(t, haAPI(c.Node((i+1)%c.Len())), mount+"/creds/"+name)
		requireFields(t, read.Data, map[string]string{"id": field(created.Data, "id"), "type": "api_key", "version": "1"})
		requireNoSecrets(t, "creds read through another node", read.Raw, []string{secret})
		keys[name] = field(created.Data, "id")
	}

	// A generated credential rotated every minute; rotate_at makes its
	// first rotation due at the first periodic run.
	gen := newName("ha-gen")
	mustWrite(t, haAPI(standby), mount+"/creds/"+gen, map[string]any{"type": "generated", "length": 32})
	mustWrite(t, haAPI(other), mount+"/creds/"+gen+"/rotation", map[string]any{
		"interval": "1m", "rotate_at": time.Now().UTC().Format(time.RFC3339),
	})

	// An oauth2 client_credentials credential; one token read, then only
	// the engine's background refresh talks to the server.
	oauth := newName("ha-oauth")
	clientID, clientSecret := srv.ClientCredentialsClient()
	mustWrite(t, haAPI(standby), mount+"/creds/"+oauth, map[string]any{
		"type": "oauth2", "grant_type": "client_credentials", "client_id": clientID,
		"client_secret": clientSecret, "token_url": srv.TokenURL(), "auth_style": "header",
	})
	readStart := time.Now()
	if tok := mustRead(t, haAPI(other), mount+"/token/"+oauth); field(tok.Data, "access_token") == "" {
		t.Fatalf("no access_token: %s", tok.Raw)
	}
	if n := srv.TokenRequests(); n != 1 {
		t.Fatalf("the OAuth2 server had %d token requests after the first token read; want 1", n)
	}

	// The first active node's periodic run: one refresh, one rotation.
	haWaitFor(t, "the first active node's periodic run", haPeriodicWait, func() (bool, string) {
		refreshes := haEvents(t, other, mount, oauth, "refresh")
		rotations := haEvents(t, other, mount, gen, "rotate")
		return len(refreshes) > 0 && len(rotations) > 0, fmt.Sprintf("%d refreshes, %d rotations", len(refreshes), len(rotations))
	})
	c.Sync(t)
	genBefore := mustRead(t, haAPI(standby), mount+"/creds/"+gen)
	genTokenBefore := field(mustRead(t, haAPI(standby), mount+"/token/"+gen).Data, "access_token")
	versionBefore, _ := strconv.Atoi(field(genBefore.Data, "version"))
	if versionBefore < 2 {
		t.Fatalf("generated credential at version %d after the first periodic run; want a rotation", versionBefore)
	}

	// What must survive: the credentials and the audit trail (the query
	// flushes the active node's buffer).
	c.Sync(t)
	credsBefore := haList(t, standby, mount)
	eventsBefore := haEvents(t, standby, mount, "", "")
	requestsAtStop, refreshesBeforeStop := haRefreshAccount(t, srv, standby, mount, oauth)
	requireFields(t, mustRead(t, haAPI(haMetricsNode(c, other)), mount+"/metrics/"+oauth).Data,
		map[string]string{"refresh_count": strconv.FormatInt(requestsAtStop, 10)})
	// Two events only in the active node's audit buffer: one older than
	// the flush period (the engine's flusher writes it), one written just
	// before the stop (Clean writes it).
	buffered := map[string]string{} // name -> how its create event reaches storage
	flushed := newName("ha-flushed")
	mustWrite(t, haAPI(active), mount+"/creds/"+flushed, map[string]any{"type": "api_key", "api_key": "ha-SECRET-flushed"})
	buffered[flushed] = "background flush (every second)"
	time.Sleep(haAuditFlushWait)
	late := newName("ha-late")
	mustWrite(t, haAPI(active), mount+"/creds/"+late, map[string]any{"type": "api_key", "api_key": "ha-SECRET-late"})
	buffered[late] = "final flush in Clean when the node stopped"

	stopAt := time.Now()
	c.StopNode(t, first)
	next := c.WaitActive(t, time.Minute)
	t.Logf("node %d stopped %s after the start; node %d active %s later",
		first, stopAt.Sub(began).Round(time.Second), next, time.Since(stopAt).Round(100*time.Millisecond))
	if next == first {
		t.Fatalf("node %d was stopped but is named active", first)
	}
	// The old active node rejoins as a standby before the new active
	// node's first periodic run.
	c.StartNode(t, first)
	if got := c.Active(); got != next {
		t.Fatalf("after node %d rejoined, node %d is active; want %d", first, got, next)
	}
	rejoined := c.Node(first)

	// The new active node's first periodic run.
	var genAfter *response
	haWaitFor(t, "the new active node's periodic run", haPeriodicWait, func() (bool, string) {
		genAfter = mustRead(t, haAPI(rejoined), mount+"/creds/"+gen)
		refreshes := haEventsSince(haEvents(t, rejoined, mount, oauth, "refresh"), stopAt)
		version, _ := strconv.Atoi(field(genAfter.Data, "version"))
		return version > versionBefore && len(refreshes) > 0,
			fmt.Sprintf("version %s, %d refreshes since the stop", field(genAfter.Data, "version"), len(refreshes))
	})
	t.Logf("new active node's periodic run %s after the stop", time.Since(stopAt).Round(time.Second))
	for i := 0; i < c.Len(); i++ {
		if !c.Node(i).Running() {
			t.Errorf("node %d is not running during the new active node's periodic run", i)
		}
	}

	t.Run("token expiring during the failover refreshed once", func(t *testing.T) {
		requests, refreshes := haRefreshAccount(t, srv, rejoined, mount, oauth)
		if requests != 1+int64(len(refreshes)) {
			t.Errorf("the OAuth2 server had %d token requests; the engine recorded the first read and %d refreshes: %v",
				requests, len(refreshes), refreshes)
		}
		after := haEventsSince(refreshes, stopAt)
		if got := requests - requestsAtStop; got != int64(len(after)) || got < 1 {
			t.Errorf("%d token requests since the stop; want one per refresh recorded since (%d), at least one", got, len(after))
		}
		// refresh_count of the new active node: its requests since it
		// started, which is since the stop.
		requireFields(t, mustRead(t, haAPI(haMetricsNode(c, standby)), mount+"/metrics/"+oauth).Data,
			map[string]string{"refresh_count": strconv.FormatInt(requests-requestsAtStop, 10)})
		// The token current at the stop was issued by the last refresh
		// before it; it had expired when the new active node refreshed.
		if len(after) == 0 || len(refreshesBeforeStop) == 0 {
			t.Fatalf("refreshes before the stop %v, after %v; want some of both", refreshesBeforeStop, after)
		}
		issued := refreshesBeforeStop[len(refreshesBeforeStop)-1].Time
		if expired := issued.Add(haTokenLifetime); !after[0].Time.After(expired) {
			t.Errorf("first refresh after the stop at %s; want it after the token of %s expired (%s)",
				after[0].Time.Format(time.RFC3339Nano), issued.Format(time.RFC3339Nano), expired.Format(time.RFC3339Nano))
		}
		times := []time.Time{readStart}
		for _, ev := range refreshes {
			times = append(times, ev.Time)
		}
		for i := 1; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap < haMinRefreshGap {
				t.Errorf("refreshes %s apart (%s, %s): a token refreshed before it was due, twice for one expiry",
					gap, times[i-1].Format(time.RFC3339Nano), times[i].Format(time.RFC3339Nano))
			}
		}
		// The new active node serves the refreshed token (a read may
		// refresh again; the accounting above is done).
		if tok := mustRead(t, haAPI(standby), mount+"/token/"+oauth); field(tok.Data, "access_token") == "" {
			t.Errorf("no access_token after the failover: %s", tok.Raw)
		}
	})

	t.Run("scheduled rotation continues", func(t *testing.T) {
		rotations := haEvents(t, rejoined, mount, gen, "rotate")
		after := haEventsSince(rotations, stopAt)
		if len(after) == 0 || !after[0].Success || strconv.Itoa(after[0].Version) != field(genAfter.Data, "version") {
			t.Errorf("rotate events since the stop %+v; want a successful one to version %s", after, field(genAfter.Data, "version"))
		}
		if field(genAfter.Data, "id") == field(genBefore.Data, "id") {
			t.Errorf("generated credential still has id %s after a rotation", field(genAfter.Data, "id"))
		}
		if tok := field(mustRead(t, haAPI(other), mount+"/token/"+gen).Data, "access_token"); tok == genTokenBefore || tok == "" {
			t.Errorf("token of %s after the new active node's rotation = %q; want a new value", gen, tok)
		}
	})

	t.Run("nothing written before the failover is lost", func(t *testing.T) {
		want := append(slices.Clone(credsBefore), flushed, late)
		slices.Sort(want)
		c.Sync(t)
		for i := 0; i < c.Len(); i++ {
			if got := haList(t, c.Node(i), mount); !slices.Equal(got, want) {
				t.Errorf("node %d lists %v; want %v", i, got, want)
			}
		}
		for name, id := range keys {
			requireFields(t, mustRead(t, haAPI(rejoined), mount+"/creds/"+name).Data, map[string]string{"id": id, "version": "1"})
		}

		after := map[string]bool{}
		for _, ev := range haEvents(t, other, mount, "", "") {
			after[ev.ID] = true
		}
		for _, ev := range eventsBefore {
			if !after[ev.ID] {
				t.Errorf("audit event lost in the failover: %+v", ev)
			}
		}
		for name, how := range buffered {
			if name == late && c.Host == harness.HostOpenBao {
				continue // see the subtest below
			}
			if n := len(haEvents(t, other, mount, name, "create")); n != 1 {
				t.Errorf("%d create events of %s, left to the %s; want 1", n, name, how)
			}
		}
		t.Run("final flush in Clean", func(t *testing.T) {
			if c.Host == harness.HostOpenBao {
				// OpenBao's active node, stopped, hands raft leadership
				// over (RaftLock.Unlock: LeadershipTransfer) before it
				// unloads its mounts, so the plugin's Clean finds storage
				// that no longer takes writes: events of the last flush
				// period are lost, as in a crash (audit_sync avoids it).
				t.Skip("impossible on OpenBao: a stopping active node unloads its mounts after giving up raft leadership")
			}
			if n := len(haEvents(t, other, mount, late, "create")); n != 1 {
				t.Errorf("%d create events of %s, left to the %s; want 1", n, late, buffered[late])
			}
		})
	})
	t.Logf("done %s after the start", time.Since(began).Round(time.Second))
}

// haMetricsNode is the node to read the active node's metrics through:
// via, a standby, on Vault (it forwards the read); the active node itself
// on OpenBao, where a standby answers metrics reads with its own in-memory
// counters (it serves reads locally).
func haMetricsNode(c *harness.Cluster, via *harness.Vault) *harness.Vault {
	if c.Host == harness.HostOpenBao {
		return c.Node(c.Active())
	}
	return via
}

// haAPI is the HTTP API driver of one node, with the root token.
func haAPI(v *harness.Vault) driver { return apiDriver{c: v.Client()} }

// haEvent is one event of the engine's audit trail.
type haEvent struct {
	ID         string    `json:"id"`
	Time       time.Time `json:"time"`
	Action     string    `json:"action"`
	Credential string    `json:"credential"`
	Version    int       `json:"version"`
	User       string    `json:"user"`
	// ExecutionID is the caller context of token reads.
	ExecutionID string `json:"execution_id"`
	Success     bool   `json:"success"`
	Error       string `json:"error"`
}

// haEvents queries the audit trail through node v (the active node flushes
// its buffer first): events of credential and action ("" = any), oldest
// first.
func haEvents(tb testing.TB, v *harness.Vault, mount, credential, action string) []haEvent {
	tb.Helper()
	query := map[string][]string{"limit": {"1000"}}
	if credential != "" {
		query["credential"] = []string{credential}
	}
	if action != "" {
		query["action"] = []string{action}
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	resp, err := v.Client().Logical().ReadRawWithDataWithContext(ctx, mount+"/audit", query)
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		tb.Fatalf("reading %s/audit through %s: %v", mount, v.Addr, apiError(err))
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("reading the audit answer: %v", err)
	}
	var body struct {
		Data struct {
			Events []haEvent `json:"events"`
			Next   string    `json:"next"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		tb.Fatalf("decoding the audit answer %s: %v", raw, err)
	}
	if body.Data.Next != "" {
		tb.Fatalf("more than 1000 audit events; the test expects far fewer")
	}
	events := body.Data.Events
	slices.Reverse(events) // newest first -> oldest first
	return events
}

// haEventsSince returns the events after t.
func haEventsSince(events []haEvent, t time.Time) []haEvent {
	var out []haEvent
	for _, ev := range events {
		if ev.Time.After(t) {
			out = append(out, ev)
		}
	}
	return out
}

// haRefreshAccount answers the OAuth2 server's token request count and the
// credential's successful refresh events, read together: the events are
// read before and after the count until both reads agree, so a refresh in
// flight cannot make them disagree. A failed refresh fails the test.
func haRefreshAccount(tb testing.TB, srv *oauthserver.Server, v *harness.Vault, mount, name string) (int64, []haEvent) {
	tb.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		before := haEvents(tb, v, mount, name, "refresh")
		requests := srv.TokenRequests()
		after := haEvents(tb, v, mount, name, "refresh")
		if len(before) != len(after) {
			time.Sleep(time.Second)
			continue
		}
		for _, ev := range after {
			if !ev.Success {
				tb.Fatalf("failed refresh in the audit trail: %+v", ev)
			}
		}
		return requests, after
	}
	tb.Fatalf("refreshes of %s kept coming while counting", name)
	return 0, nil
}

// haList lists the credentials through node v, sorted.
func haList(tb testing.TB, v *harness.Vault, mount string) []string {
	tb.Helper()
	names, err := haAPI(v).List(tb, mount+"/creds/")
	if err != nil {
		tb.Fatalf("listing %s/creds/ through %s: %v", mount, v.Addr, err)
	}
	slices.Sort(names)
	return names
}

// haWaitFor polls cond every haPollEvery until it holds, failing the test
// after limit with cond's last description of the state.
func haWaitFor(tb testing.TB, what string, limit time.Duration, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no %s within %s: %s", what, limit, state)
		}
		time.Sleep(haPollEvery)
	}
}

// haUpgradeVersion is the version TestHAPluginUpgrade upgrades to.
const haUpgradeVersion = "v99.0.0-ha-upgrade"

// TestHAPluginUpgrade (about 40s) upgrades the plugin on a three-node
// cluster the way the README describes: the new binary, under a file name
// of its own, in every node's plugin directory; `vault plugin register
// -version -command`, `vault secrets tune -plugin-version` and `vault plugin
// reload` through a standby (forwarded to the active node); the mount runs
// the new version with its data, and still does on the next active node
// after a failover. -short skips it.
func TestHAPluginUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: a three-node cluster and a second plugin build")
	}
	t.Parallel()
	c := harness.StartCluster(t, 3)
	first := c.WaitActive(t, time.Minute)
	standby := c.Node((first + 1) % 3)
	mount, name := c.Mount, newName("ha-upgrade")
	created := mustWrite(t, haAPI(standby), mount+"/creds/"+name, map[string]any{"type": "api_key", "api_key": "up-SECRET-1"})

	command := c.Plugin.Name + "-" + haUpgradeVersion
	sha := haBuildPlugin(t, haUpgradeVersion, func(i int) string { return filepath.Join(c.Node(i).Plugin.Dir, command) }, c.Len())
	steps := []struct {
		node int
		args []string
	}{
		{(first + 1) % 3, []string{"plugin", "register", "-sha256=" + sha, "-version=" + haUpgradeVersion, "-command=" + command, "secret", c.Plugin.Name}},
		{(first + 1) % 3, []string{"secrets", "tune", "-plugin-version=" + haUpgradeVersion, mount + "/"}},
		{(first + 1) % 3, []string{"plugin", "reload", "-type=secret", "-plugin=" + c.Plugin.Name}},
	}
	if c.Host == harness.HostOpenBao {
		// `bao plugin reload` has no -type flag and reloads the mounts of
		// the node it is sent to (a standby serving reads answers it
		// itself): send it to the active node. Every OpenBao node runs
		// the plugin, and a standby keeps the mount's old plugin_version
		// after the tune until it restarts (OpenBao 2.6.2): the standbys
		// are restarted one at a time below.
		steps[2] = struct {
			node int
			args []string
		}{first, []string{"plugin", "reload", "-plugin=" + c.Plugin.Name}}
	}
	for _, step := range steps {
		if step.node != first {
			c.Sync(t)
		}
		if out, err := c.Node(step.node).CLI(t, step.args...); err != nil {
			t.Fatalf("node %d: vault %s: %v", step.node, strings.Join(step.args, " "), err)
		} else {
			t.Logf("node %d: vault %s: %s", step.node, strings.Join(step.args, " "), strings.TrimSpace(out))
		}
	}

	if c.Host == harness.HostOpenBao {
		for _, i := range []int{(first + 1) % 3, (first + 2) % 3} {
			c.StopNode(t, i)
			c.StartNode(t, i)
		}
	}

	requireRunning := func(when string) {
		t.Helper()
		c.Sync(t)
		for i := 0; i < c.Len(); i++ {
			if !c.Node(i).Running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			m, err := c.Node(i).Client().Sys().GetMountWithContext(ctx, mount)
			cancel()
			if err != nil {
				t.Fatalf("%s: reading sys/mounts/%s through node %d: %v", when, mount, i, err)
			}
			if m.PluginVersion != haUpgradeVersion || m.RunningVersion != haUpgradeVersion || m.RunningSha256 != sha {
				t.Errorf("%s: node %d: mount at plugin_version %q runs %q (sha %s); want %q (sha %s)",
					when, i, m.PluginVersion, m.RunningVersion, m.RunningSha256, haUpgradeVersion, sha)
			}
		}
		requireFields(t, mustRead(t, haAPI(standby), mount+"/creds/"+name).Data, map[string]string{"id": field(created.Data, "id")})
		requireFields(t, mustRead(t, haAPI(standby), mount+"/token/"+name).Data, map[string]string{"access_token": "up-SECRET-1"})
	}
	requireRunning("after the reload")

	c.StopNode(t, first)
	next := c.WaitActive(t, time.Minute)
	standby = c.Node(3 - first - next)
	requireRunning(fmt.Sprintf("after node %d took over", next))
}

// haBuildPlugin builds the plugin stamped with version to dst(0), copies it
// to dst(1) .. dst(n-1) and answers its SHA-256.
func haBuildPlugin(tb testing.TB, version string, dst func(int) string, n int) string {
	tb.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		tb.Fatalf("module root: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dst(0), "-ldflags", "-X main.version="+version, "./cmd/"+harness.PluginName)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", version, err, out)
	}
	bin, err := os.ReadFile(dst(0))
	if err != nil {
		tb.Fatalf("reading the build: %v", err)
	}
	for i := 1; i < n; i++ {
		if err := os.WriteFile(dst(i), bin, 0o700); err != nil {
			tb.Fatalf("copying the build: %v", err)
		}
	}
	sum := sha256.Sum256(bin)
	return hex.EncodeToString(sum[:])
}
