package acceptance

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/test/harness"
	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// Timing and size of TestOpenBaoStandbyReads. Tokens live obTokenLifetime;
// refresh_ahead is 0, so a token counts as expiring only once it has
// expired and the background refresh (once a minute) never refreshes one
// early: whoever refreshes after the expiry, the periodic run or a read,
// there is exactly one upstream request for it.
const (
	obTokenLifetime = 20 * time.Second
	obReads         = 180
	obValidReads    = 30 // spread over the nodes, of the refreshed token
	obLocalReads    = 30 // per standby, with standby_token_reads=local
)

// TestOpenBaoStandbyReads (OpenBao only, about 70s) runs the engine on a
// three-node OpenBao cluster with integrated storage and default settings,
// so standbys serve reads (disable_standby_reads is not set) and run the
// plugin on read-only storage:
//
//   - a creds/ write through a standby succeeds (forwarded to the active
//     node) and reads the same through every node;
//   - obReads concurrent token reads spread over the three nodes after the
//     token expired make exactly one upstream token request, all answer the
//     same new token, and every one of them is in the engine's audit trail
//     (each read carries its own execution_id): standbys forward token reads
//     to the active node (standby_token_reads=forward, the default); so do
//     obValidReads reads of the refreshed, valid token that follow;
//   - with standby_token_reads=local, standbys serve valid tokens
//     themselves (no upstream request) and, as documented, those reads are
//     not in the engine's audit trail;
//   - killing the active node (SIGKILL) loses no credential written before,
//     through any node, nor any audit event a query had flushed.
//
// -short skips it.
func TestOpenBaoStandbyReads(t *testing.T) {
	if !harness.IsOpenBao() {
		t.Skip("OpenBao only (NEBULA_TEST_HOST=openbao): Vault OSS standbys forward every request")
	}
	if testing.Short() {
		t.Skip("slow: a three-node cluster and a token expiry")
	}
	t.Parallel()
	began := time.Now()
	c := harness.StartCluster(t, 3)
	srv := oauthserver.Start(t, oauthserver.WithAccessTokenLifetime(obTokenLifetime))
	first := c.WaitActive(t, time.Minute)
	mount := c.Mount
	active, standbyA, standbyB := c.Node(first), c.Node((first+1)%3), c.Node((first+2)%3)
	t.Logf("cluster up in %s; node %d active", time.Since(began).Round(time.Second), first)

	mustWrite(t, haAPI(standbyA), mount+"/config", map[string]any{"insecure_http_hosts": "127.0.0.1", "refresh_ahead": "0s"})

	t.Run("creds write through a standby", func(t *testing.T) {
		name := newName("ob-key")
		created := mustWrite(t, haAPI(standbyB), mount+"/creds/"+name, map[string]any{"type": "api_key", "api_key": "ob-SECRET-1"})
		c.Sync(t) // standbys read their own copy of the data: eventually consistent
		for i := 0; i < c.Len(); i++ {
			read := mustRead(t, haAPI(c.Node(i)), mount+"/creds/"+name)
			requireFields(t, read.Data, map[string]string{"id": field(created.Data, "id"), "type": "api_key", "version": "1"})
			requireNoSecrets(t, fmt.Sprintf("creds read through node %d", i), read.Raw, []string{"ob-SECRET-1"})
			tok := mustRead(t, haAPI(c.Node(i)), mount+"/token/"+name)
			requireFields(t, tok.Data, map[string]string{"access_token": "ob-SECRET-1"})
		}
	})

	oauth := newName("ob-oauth")
	clientID, clientSecret := srv.ClientCredentialsClient()
	mustWrite(t, haAPI(standbyA), mount+"/creds/"+oauth, map[string]any{
		"type": "oauth2", "grant_type": "client_credentials", "client_id": clientID,
		"client_secret": clientSecret, "token_url": srv.TokenURL(), "auth_style": "header",
	})
	c.Sync(t)
	issued := time.Now()
	firstToken := field(mustRead(t, haAPI(standbyB), mount+"/token/"+oauth).Data, "access_token")
	if firstToken == "" || srv.TokenRequests() != 1 {
		t.Fatalf("first token read: token %q, %d upstream requests; want a token and 1", firstToken, srv.TokenRequests())
	}

	t.Run("reads after expiry refresh once and are all audited", func(t *testing.T) {
		time.Sleep(time.Until(issued.Add(obTokenLifetime + time.Second)))
		tokens := make([]string, obReads)
		errs := make([]error, obReads)
		var wg sync.WaitGroup
		for i := range obReads {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := haAPI(c.Node(i%c.Len())).Write(t, mount+"/token/"+oauth, map[string]any{"execution_id": obExecID(i)})
				errs[i] = err
				if err == nil {
					tokens[i] = field(resp.Data, "access_token")
				}
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("token read %d through node %d: %v", i, i%c.Len(), err)
			}
		}
		for i, tok := range tokens {
			if tok == "" || tok == firstToken || tok != tokens[0] {
				t.Fatalf("token read %d through node %d answered a token other than the one new token (first %q, read 0 %q, this %q)",
					i, i%c.Len(), firstToken, tokens[0], tok)
			}
		}
		if n := srv.TokenRequests(); n != 2 {
			t.Errorf("the OAuth2 server had %d token requests; want 2: the first read and one refresh for the expiry", n)
		}

		// Reads of the valid token: standbys hold it in their copy of the
		// storage now, yet still forward the reads, so the active node
		// audits them.
		c.Sync(t)
		for i := obReads; i < obReads+obValidReads; i++ {
			resp := mustWrite(t, haAPI(c.Node(i%c.Len())), mount+"/token/"+oauth, map[string]any{"execution_id": obExecID(i)})
			if tok := field(resp.Data, "access_token"); tok != tokens[0] {
				t.Fatalf("read %d of the valid token through node %d answered another token", i, i%c.Len())
			}
		}
		if n := srv.TokenRequests(); n != 2 {
			t.Errorf("the OAuth2 server had %d token requests after reads of the valid token; want still 2", n)
		}

		// The query is forwarded to the active node, which flushes its
		// buffer first.
		seen := map[string]int{}
		for _, ev := range haEvents(t, standbyA, mount, oauth, "read_token") {
			if !ev.Success {
				t.Errorf("failed read_token event: %+v", ev)
			}
			seen[ev.ExecutionID]++
		}
		for i := range obReads + obValidReads {
			if n := seen[obExecID(i)]; n != 1 {
				t.Errorf("read %d (through node %d): %d read_token events with execution_id %s; want 1", i, i%c.Len(), n, obExecID(i))
			}
		}
		if seen[""] != 1 {
			t.Errorf("%d read_token events without execution_id; want 1 (the first read)", seen[""])
		}
	})

	t.Run("health and metrics through any node are the active node's", func(t *testing.T) {
		// Standbys forward these reads: the counters of the forwarded token
		// reads above are on the active node only, so a standby answering
		// itself would show (almost) none of them. (That health is forwarded
		// too is checked in the unit TestStandbyTokenReads: its answer on a
		// standby would look the same here.)
		want := mustRead(t, haAPI(active), mount+"/metrics")
		reads, err := strconv.Atoi(field(want.Data, "token_reads"))
		if err != nil || reads < obReads+obValidReads {
			t.Fatalf("active node's token_reads %q; want at least %d", field(want.Data, "token_reads"), obReads+obValidReads)
		}
		for _, v := range []*harness.Vault{standbyA, standbyB} {
			got := mustRead(t, haAPI(v), mount+"/metrics")
			for _, k := range []string{"token_reads", "total_credentials"} { // only this test changes them now
				if field(got.Data, k) != field(want.Data, k) {
					t.Errorf("metrics %s through %s: %q; the active node answers %q", k, v.Addr, field(got.Data, k), field(want.Data, k))
				}
			}
			if h := mustRead(t, haAPI(v), mount+"/health"); field(h.Data, "status") == "" {
				t.Errorf("health through %s answered no status: %v", v.Addr, h.Data)
			}
			if m := mustRead(t, haAPI(v), mount+"/metrics/"+oauth); field(m.Data, "usage_count") == "0" {
				t.Errorf("metrics/%s through %s: usage_count 0; the active node served the reads", oauth, v.Addr)
			}
		}
	})

	t.Run("standby_token_reads=local", func(t *testing.T) {
		mustWrite(t, haAPI(standbyA), mount+"/config", map[string]any{"standby_token_reads": "local"})
		c.Sync(t)
		for i := 0; i < c.Len(); i++ {
			requireFields(t, mustRead(t, haAPI(c.Node(i)), mount+"/config").Data, map[string]string{"standby_token_reads": "local"})
		}
		before := len(haEvents(t, active, mount, oauth, "read_token"))
		requests := srv.TokenRequests()
		var want string
		for _, v := range []*harness.Vault{standbyA, standbyB} {
			for i := 0; i < obLocalReads; i++ {
				tok := field(mustWrite(t, haAPI(v), mount+"/token/"+oauth, map[string]any{"execution_id": "ob-local"}).Data, "access_token")
				if want == "" {
					want = tok
				}
				if tok == "" || tok != want {
					t.Fatalf("local read through %s answered %q; want the current token %q", v.Addr, tok, want)
				}
			}
		}
		if n := srv.TokenRequests(); n != requests {
			t.Errorf("local reads of a valid token made %d upstream requests", n-requests)
		}
		// The documented exception: reads served by a standby are not in
		// the engine's audit trail (the standby cannot store events).
		if after := len(haEvents(t, standbyB, mount, oauth, "read_token")); after != before {
			t.Errorf("%d read_token events after %d local reads on standbys; want %d (none recorded)", after, 2*obLocalReads, before)
		}
		mustWrite(t, haAPI(active), mount+"/config", map[string]any{"standby_token_reads": "forward"})
		c.Sync(t)
	})

	t.Run("killing the active node loses nothing written before", func(t *testing.T) {
		written := map[string]string{} // name -> id
		for i := 0; i < 2*c.Len(); i++ {
			name := newName("ob-kill")
			resp := mustWrite(t, haAPI(c.Node(i%c.Len())), mount+"/creds/"+name, map[string]any{"type": "api_key", "api_key": "ob-SECRET-kill"})
			written[name] = field(resp.Data, "id")
		}
		c.Sync(t)
		want := haList(t, active, mount)
		for name := range written {
			if !slices.Contains(want, name) {
				t.Fatalf("%s is not listed before the kill: %v", name, want)
			}
		}
		eventsBefore := haEvents(t, standbyA, mount, "", "")

		killedAt := time.Now()
		c.KillNode(t, first)
		next := c.WaitActive(t, time.Minute)
		if next == first {
			t.Fatalf("killed node %d is still named active", first)
		}
		t.Logf("node %d active %s after node %d was killed", next, time.Since(killedAt).Round(100*time.Millisecond), first)
		c.Sync(t)
		for i := 0; i < c.Len(); i++ {
			if !c.Node(i).Running() {
				continue
			}
			if got := haList(t, c.Node(i), mount); !slices.Equal(got, want) {
				t.Errorf("node %d lists %v after the kill; want %v", i, got, want)
			}
			for name, id := range written {
				requireFields(t, mustRead(t, haAPI(c.Node(i)), mount+"/creds/"+name).Data, map[string]string{"id": id, "version": "1"})
			}
		}
		after := map[string]bool{}
		for _, ev := range haEvents(t, c.Node(next), mount, "", "") {
			after[ev.ID] = true
		}
		for _, ev := range eventsBefore {
			if !after[ev.ID] {
				t.Errorf("audit event lost when the active node was killed: %+v", ev)
			}
		}
		// The new active node serves tokens (a standby forwards to it).
		if tok := field(mustRead(t, haAPI(c.Node(3-first-next)), mount+"/token/"+oauth).Data, "access_token"); tok == "" {
			t.Errorf("no token after the failover")
		}
	})
	t.Logf("done %s after the start", time.Since(began).Round(time.Second))
}

// obExecID is the execution_id of concurrent read i.
func obExecID(i int) string { return fmt.Sprintf("ob-read-%03d", i) }
