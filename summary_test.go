package nebula

import (
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/test/harness/oauthserver"
)

// The scan implementation of health and metrics, as it was before the
// summaries: the oracle the summary answers are compared with.

// scanAllCredentials visits every credential's metadata.
func scanAllCredentials(ctx context.Context, s logical.Storage, visit func(*credential)) error {
	names, err := s.List(ctx, credsPrefix)
	if err != nil {
		return storageError("listing credentials", err)
	}
	for _, name := range names {
		c, err := loadCredential(ctx, s, name)
		if err != nil {
			return err
		}
		if c != nil {
			visit(c)
		}
	}
	return nil
}

// scanMirrorHealth reports mirror errors from a scan of the mirror states.
func scanMirrorHealth(ctx context.Context, b *backend, s logical.Storage) []healthIssue {
	var issues []healthIssue
	_ = b.eachMirrorState(ctx, s, func(name, target string, st *mirrorState) {
		if st.LastError != "" {
			issues = append(issues, healthIssue{Credential: name, Target: target, Kind: "mirror_error", Message: st.LastError})
		}
	})
	return issues
}

// scanHealthRead is the health answer computed by scanning storage.
func scanHealthRead(ctx context.Context, b *backend, s logical.Storage) map[string]any {
	now := b.now()
	issues := []healthIssue{}
	err := scanAllCredentials(ctx, s, func(c *credential) {
		issues = append(issues, credentialIssues(c, now)...)
	})
	status := healthHealthy
	switch {
	case err != nil:
		status = healthUnhealthy
		issues = append(issues, healthIssue{Kind: "storage_error", Message: err.Error()})
	case len(issues) > 0:
		status = healthDegraded
	}
	issues = append(issues, scanMirrorHealth(ctx, b, s)...)
	issues = append(issues, b.auditHealthIssues(now)...)
	return healthData(status, issues, now)
}

// scanTotals are the metrics totals computed by scanning storage.
func scanTotals(ctx context.Context, s logical.Storage) (int, map[string]int, error) {
	byType := map[string]int{}
	total := 0
	err := scanAllCredentials(ctx, s, func(c *credential) {
		total++
		byType[c.Type]++
	})
	return total, byType, err
}

// scanStoredCounts are the Prometheus counts of credentials by {type,
// status} and of mirror states by {target, sync status}, by a scan.
func scanStoredCounts(tb testing.TB, b *backend, s logical.Storage, now time.Time) (creds, mirrors map[[2]string]int) {
	tb.Helper()
	creds, mirrors = map[[2]string]int{}, map[[2]string]int{}
	require.NoError(tb, scanAllCredentials(context.Background(), s, func(c *credential) {
		creds[[2]string{c.Type, c.status(now)}]++
	}))
	require.NoError(tb, b.eachMirrorState(context.Background(), s, func(_, target string, st *mirrorState) {
		mirrors[[2]string{target, st.SyncStatus}]++
	}))
	return creds, mirrors
}

// requireSameAsScan compares the health and metrics answers (and the
// Prometheus counts of stored state) with the scan's.
func requireSameAsScan(tb testing.TB, e *testEnv, step string) {
	tb.Helper()
	ctx := context.Background()
	want := scanHealthRead(ctx, e.b, e.storage)
	got := e.mustRequest(tb, logical.ReadOperation, "health", nil).Data
	require.Equal(tb, want, got, "health after %s", step)

	wantCreds, wantMirrors := scanStoredCounts(tb, e.b, e.storage, e.b.now())
	stored, err := e.b.countStored(ctx, e.storage, e.b.now())
	require.NoError(tb, err)
	require.Equal(tb, wantCreds, stored.credentials, "prometheus credential counts after %s", step)
	require.Equal(tb, wantMirrors, stored.mirrors, "prometheus mirror counts after %s", step)

	total, byType, err := scanTotals(ctx, e.storage)
	require.NoError(tb, err)
	m := e.mustRequest(tb, logical.ReadOperation, "metrics", nil).Data
	require.Equal(tb, total, m["total_credentials"], "total_credentials after %s", step)
	require.Equal(tb, byType, m["credentials_by_type"], "credentials_by_type after %s", step)
}

// putRaw writes a credential's metadata straight to storage and tells the
// backend the key changed, as replication does on another node.
func putRaw(tb testing.TB, e *testEnv, c *credential) {
	tb.Helper()
	entry, err := logical.StorageEntryJSON(credKey(c.Name), c)
	require.NoError(tb, err)
	require.NoError(tb, e.storage.Storage.Put(context.Background(), entry))
	e.b.invalidate(context.Background(), credKey(c.Name))
}

func mustLoad(tb testing.TB, e *testEnv, name string) *credential {
	tb.Helper()
	c, err := loadCredential(context.Background(), e.storage, name)
	require.NoError(tb, err)
	require.NotNil(tb, c, name)
	return c
}

// TestSummaryAnswersMatchTheScan drives a varied mount through a sequence
// of operations and compares health and metrics with the scan after each.
func TestSummaryAnswersMatchTheScan(t *testing.T) {
	e := newMirrorEnv(t)
	srv := oauthserver.Start(t, oauthserver.WithAccessTokenLifetime(10*time.Minute))
	e.b.upstreamBackoff = time.Millisecond
	ctx := context.Background()
	env := e.testEnv
	check := func(step string) { t.Helper(); requireSameAsScan(t, env, step) }
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{
		"allowed_hosts": "127.0.0.1,auth.example.com,oauth2.googleapis.com,accounts.google.com"})
	check("nothing stored")

	// Every type.
	for name, in := range validCreds {
		e.mustRequest(t, logical.CreateOperation, "creds/t-"+name, in)
	}
	createClientCredentials(t, env, srv, "svc")
	createClientCredentials(t, env, srv, "svc2")
	e.mustRequest(t, logical.ReadOperation, "token/svc", nil)
	e.mustRequest(t, logical.ReadOperation, "token/svc2", nil)
	check("one of each type")

	// Bearer tokens expiring soon and expired already.
	now := e.clock.Now()
	e.mustRequest(t, logical.CreateOperation, "creds/b-soon", map[string]any{
		"type": "bearer", "token": "tok-1", "expires_at": now.Add(30 * time.Minute).Format(time.RFC3339)})
	e.mustRequest(t, logical.CreateOperation, "creds/b-gone", map[string]any{
		"type": "bearer", "token": "tok-2", "expires_at": now.Add(-time.Hour).Format(time.RFC3339)})
	check("bearer tokens")

	// Rotation policies: interval with a warning period, a fixed time.
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	e.mustRequest(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"interval": "1h", "warning_period": "10m"})
	e.mustRequest(t, logical.CreateOperation, "creds/k2", validCreds["api_key"])
	e.mustRequest(t, logical.UpdateOperation, "creds/k2/rotation", map[string]any{
		"rotate_at": now.Add(2 * time.Hour).Format(time.RFC3339), "warning_period": "90m"})
	check("rotation policies")

	// Type-independent updates.
	e.mustRequest(t, logical.UpdateOperation, "creds/t-basic_auth", map[string]any{"description": "d", "tags": "a,b"})
	e.mustRequest(t, logical.UpdateOperation, "creds/b-soon", map[string]any{"metadata": map[string]any{"owner": "ops"}})
	check("metadata updates")

	// A mirror target that fails, and one that works.
	e.aws.FailWith(func(string) (int, string) { return 400, "AccessDeniedException" })
	e.mustRequest(t, logical.CreateOperation, "creds/m", map[string]any{"type": "api_key", "api_key": "mirror-1", "mirror": "aws,azure"})
	check("mirror error")

	// Refresh failure, then recovery.
	srv.SetFailing(true)
	_, err := e.request(t, logical.UpdateOperation, "refresh/svc", nil)
	require.Error(t, err)
	_, err = e.request(t, logical.UpdateOperation, "refresh/svc2", nil)
	require.Error(t, err)
	check("refresh failures")
	srv.SetFailing(false)
	e.mustRequest(t, logical.UpdateOperation, "refresh/svc", nil)
	check("refresh recovered")

	// Time passes: into the warning period, then past the rotation and the
	// bearer's expiry.
	e.clock.Advance(31 * time.Minute)
	check("31m later")
	e.clock.Advance(20 * time.Minute)
	check("51m later")
	e.clock.Advance(10 * time.Minute)
	check("61m later")

	// A scheduled rotation that fails (an api_key without a webhook).
	require.Error(t, e.b.periodicRotation(ctx, e.storage))
	check("scheduled rotation failed")
	e.mustRequest(t, logical.UpdateOperation, "rotate/k", map[string]any{"api_key": "new-value"})
	check("manual rotation")

	// The mirror recovers.
	e.aws.FailWith(nil)
	e.mustRequest(t, logical.UpdateOperation, "creds/m", map[string]any{"description": "again"})
	check("mirror recovered")

	// Deletes, one of them mirrored (its delete fails and stays pending).
	e.aws.FailWith(func(string) (int, string) { return 400, "AccessDeniedException" })
	e.mustRequest(t, logical.DeleteOperation, "creds/m", nil)
	e.mustRequest(t, logical.DeleteOperation, "creds/b-gone", nil)
	e.mustRequest(t, logical.DeleteOperation, "creds/t-oauth2_refresh", nil)
	check("deletes")

	// Replication: changes written by another node, then invalidated.
	c := mustLoad(t, env, "t-api_key")
	c.LastError = "failure recorded on another node"
	putRaw(t, env, c)
	check("replicated error")
	c = mustLoad(t, env, "k2")
	c.Name = "replicated-new"
	putRaw(t, env, c)
	check("replicated create")
	c = mustLoad(t, env, "t-bearer")
	c.Type = "api_key"
	c.Fields = mustLoad(t, env, "k").Fields
	putRaw(t, env, c)
	check("replicated type change")
	require.NoError(t, e.storage.Storage.Delete(ctx, credKey("t-basic_auth")))
	e.b.invalidate(ctx, credKey("t-basic_auth"))
	check("replicated delete")
	st, err := json.Marshal(&mirrorState{SyncStatus: syncError, LastError: "replicated mirror failure"})
	require.NoError(t, err)
	require.NoError(t, e.storage.Storage.Put(ctx, &logical.StorageEntry{Key: mirrorStateKey("k", "azure"), Value: st}))
	e.b.invalidate(ctx, mirrorStateKey("k", "azure"))
	check("replicated mirror state")

	// More time, a clock set back, and many credentials at once.
	e.clock.Advance(2 * time.Hour)
	check("3h later")
	e.clock.Advance(-150 * time.Minute)
	check("clock set back")
	items := []any{}
	for i := range 30 {
		item := map[string]any{"name": fmt.Sprintf("batch-%02d", i), "type": "bearer", "token": "t",
			"expires_at": e.clock.Now().Add(time.Duration(i) * time.Minute).Format(time.RFC3339)}
		items = append(items, item)
	}
	e.mustRequest(t, logical.UpdateOperation, "batch/create", map[string]any{"items": items})
	check("batch create")
	e.clock.Advance(15 * time.Minute)
	check("half the batch expired")
	e.mustRequest(t, logical.UpdateOperation, "batch/delete", map[string]any{"names": "batch-03,batch-20"})
	check("batch delete")
}

// TestSummaryStorageFailures compares the answers while storage fails.
func TestSummaryStorageFailures(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	e.mustRequest(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"interval": "3h", "warning_period": "2h"})
	e.clock.Advance(90 * time.Minute)
	requireSameAsScan(t, e, "a credential in its warning period")

	e.storage.failList.Store(true)
	got := e.mustRequest(t, logical.ReadOperation, "health", nil).Data
	require.Equal(t, healthUnhealthy, got["status"])
	issues := got["issues"].([]map[string]any)
	require.Len(t, issues, 1, "%v", issues)
	require.Equal(t, "storage_error", issues[0]["kind"])
	_, err := e.request(t, logical.ReadOperation, "metrics", nil)
	requireKind(t, err, KindStorage)
	e.storage.failList.Store(false)
	requireSameAsScan(t, e, "storage recovered")
}

// TestOperatorReadsDoNotScan checks that, once the summaries are built,
// health and metrics reads cost a bounded number of storage reads
// whatever the number of credentials.
func TestOperatorReadsDoNotScan(t *testing.T) {
	readsPerCall := map[int]int64{}
	for _, n := range []int{10, 300} {
		e := newTestBackend(t)
		fillCredentials(t, e, n)
		cs := &countingStorage{Storage: e.storage}
		read := func(path string, data map[string]any) int64 {
			before := cs.reads.Load()
			_, err := e.handle(t, context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: path, Data: data, Storage: cs})
			require.NoError(t, err)
			return cs.reads.Load() - before
		}
		read("health", nil) // the first read builds the summaries
		e.clock.Advance(time.Hour)
		h, m := read("health", nil), read("metrics", nil)
		p := read("metrics", map[string]any{"format": "prometheus"})
		require.LessOrEqual(t, h, int64(2), "health reads with %d credentials", n)
		require.LessOrEqual(t, m, int64(2), "metrics reads with %d credentials", n)
		require.LessOrEqual(t, p, int64(3), "prometheus reads with %d credentials (the probe, the flows list)", n)
		readsPerCall[n] = h + m + p
	}
	require.Equal(t, readsPerCall[10], readsPerCall[300], "storage reads must not grow with the credentials stored")
}

// fillCredentials stores n credentials of several kinds through batch
// writes: static ones and bearer tokens, eight of them expired, the others
// expiring over the next 97 hours.
func fillCredentials(tb testing.TB, e *testEnv, n int) {
	tb.Helper()
	now := e.clock.Now()
	const chunk = 1000
	for start := 0; start < n; start += chunk {
		items := []any{}
		for i := start; i < min(n, start+chunk); i++ {
			item := map[string]any{"name": fmt.Sprintf("c-%06d", i)}
			switch i % 4 {
			case 0:
				item["type"], item["api_key"] = "api_key", "k"
			case 1:
				item["type"], item["username"], item["password"] = "basic_auth", "u", "p"
			case 2, 3:
				item["type"], item["token"] = "bearer", "t"
				expires := now.Add(time.Duration(i%97+1) * time.Hour)
				if i < 8 { // a fixed number expired, the rest later
					expires = now.Add(-time.Hour)
				}
				item["expires_at"] = expires.Format(time.RFC3339)
			}
			items = append(items, item)
		}
		e.mustRequest(tb, logical.UpdateOperation, "batch/create", map[string]any{"items": items})
	}
}

// BenchmarkHealth measures health reads at 100 and 10,000 credentials.
func BenchmarkHealth(b *testing.B) { benchmarkOperatorRead(b, "health") }

// BenchmarkMetrics measures metrics reads at 100 and 10,000 credentials.
func BenchmarkMetrics(b *testing.B) { benchmarkOperatorRead(b, "metrics") }

func benchmarkOperatorRead(b *testing.B, path string) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("credentials=%d", n), func(b *testing.B) {
			e := newTestBackend(b)
			fillCredentials(b, e, n)
			req := &logical.Request{Operation: logical.ReadOperation, Path: path, Storage: e.storage}
			e.mustRequest(b, logical.ReadOperation, path, nil)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := e.b.HandleRequest(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// holdingStorage holds the first get of one key after reading it, until
// released: the reader goes on with the value it read, older by then.
type holdingStorage struct {
	logical.Storage
	key     string
	once    sync.Once
	arrived chan struct{}
	release chan struct{}
}

func (s *holdingStorage) Get(ctx context.Context, k string) (*logical.StorageEntry, error) {
	entry, err := s.Storage.Get(ctx, k)
	if k == s.key {
		s.once.Do(func() {
			close(s.arrived)
			<-s.release
		})
	}
	return entry, err
}

// TestSummaryBuildNeitherBlocksNorLosesWrites holds the summary build in
// the middle of its storage reads: token reads and writes go ahead, and the
// writes made meanwhile (to credentials read already, not read yet, and the
// one whose read is in flight) are all in the answers afterwards.
func TestSummaryBuildNeitherBlocksNorLosesWrites(t *testing.T) {
	e := newTestBackend(t)
	fillCredentials(t, e, 20)
	hs := &holdingStorage{Storage: e.storage, key: credKey("c-000010"), arrived: make(chan struct{}), release: make(chan struct{})}
	defer func() {
		select {
		case <-hs.release:
		default:
			close(hs.release)
		}
	}()
	done := make(chan error, 1)
	go func() {
		_, err := e.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "health", Storage: hs})
		done <- err
	}()
	select {
	case <-hs.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the build did not reach the held key")
	}

	past := e.clock.Now().Add(-time.Minute).Format(time.RFC3339)
	e.mustRequest(t, logical.ReadOperation, "token/c-000004", nil)
	e.mustRequest(t, logical.UpdateOperation, "creds/c-000003", map[string]any{"expires_at": past}) // read already
	e.mustRequest(t, logical.UpdateOperation, "creds/c-000010", map[string]any{"expires_at": past}) // read in flight
	e.mustRequest(t, logical.UpdateOperation, "creds/c-000015", map[string]any{"expires_at": past}) // not read yet
	e.mustRequest(t, logical.DeleteOperation, "creds/c-000006", nil)
	e.mustRequest(t, logical.DeleteOperation, "creds/c-000014", nil)
	e.mustRequest(t, logical.CreateOperation, "creds/c-000009x", map[string]any{"type": "bearer", "token": "t", "expires_at": past})
	close(hs.release)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the health read did not finish")
	}
	requireSameAsScan(t, e, "writes during the build")
}

// TestSummaryBuildOutlivesAnImpatientReader: a health read that gives up
// while the summary is being built does not stop the build; the next read
// finds it done and reads no more than the probe.
func TestSummaryBuildOutlivesAnImpatientReader(t *testing.T) {
	e := newTestBackend(t)
	fillCredentials(t, e, 20)
	hs := &holdingStorage{Storage: e.storage, key: credKey("c-000010"), arrived: make(chan struct{}), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan map[string]any, 1)
	go func() {
		resp, err := e.b.HandleRequest(ctx, &logical.Request{Operation: logical.ReadOperation, Path: "health", Storage: hs})
		if err != nil {
			resp = &logical.Response{Data: map[string]any{"error": err.Error()}}
		}
		done <- resp.Data
	}()
	select {
	case <-hs.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the build did not reach the held key")
	}
	cancel()
	select {
	case data := <-done:
		require.Equal(t, healthUnhealthy, data["status"], "%v", data)
	case <-time.After(10 * time.Second):
		t.Fatal("the health read did not give up with its caller")
	}
	close(hs.release)

	cs := &countingStorage{Storage: e.storage}
	_, err := e.handle(t, context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "health", Storage: cs})
	require.NoError(t, err)
	require.LessOrEqual(t, cs.reads.Load(), int64(2), "the build was not started again")
	requireSameAsScan(t, e, "the build finished")
}

// TestCredentialMetadataWritersNoteTheSummary: every function that builds
// a creds/ storage entry or deletes one notes the summary (the one writer
// writeMeta and pathCredsDelete do): a new writer elsewhere fails here until
// it goes through writeMeta or notes it itself.
func TestCredentialMetadataWritersNoteTheSummary(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	require.NoError(t, err)
	writers := map[string]bool{}
	for _, pkg := range pkgs {
		for _, file := range pkg.Files {
			for _, decl := range file.Decls {
				fn, ok := decl.(*ast.FuncDecl)
				if !ok || fn.Body == nil {
					continue
				}
				ast.Inspect(fn.Body, func(n ast.Node) bool {
					call, ok := n.(*ast.CallExpr)
					if !ok || !writesCreds(call) {
						return true
					}
					if !notesSummary(fn.Body) {
						t.Errorf("%s: %s writes credential metadata (creds/) without noting the summary: go through writeMeta, or call b.summary.noteCred / noteCredDeleted",
							fset.Position(call.Pos()), fn.Name.Name)
					}
					writers[fn.Name.Name] = true
					return true
				})
			}
		}
	}
	for _, fn := range []string{"writeMeta", "pathCredsDelete"} {
		require.True(t, writers[fn], "the check finds the writer %s", fn)
	}
}

// writesCreds reports whether call builds a storage entry for, or deletes,
// a credKey(...) key.
func writesCreds(call *ast.CallExpr) bool {
	var name string
	switch f := call.Fun.(type) {
	case *ast.SelectorExpr:
		name = f.Sel.Name
	case *ast.Ident:
		name = f.Name
	}
	if name != "jsonEntry" && name != "StorageEntryJSON" && name != "Delete" && name != "Put" {
		return false
	}
	for _, arg := range call.Args {
		if inner, ok := arg.(*ast.CallExpr); ok {
			if id, ok := inner.Fun.(*ast.Ident); ok && id.Name == "credKey" {
				return true
			}
		}
		if lit, ok := arg.(*ast.CompositeLit); ok { // &logical.StorageEntry{Key: credKey(...)}
			for _, el := range lit.Elts {
				if kv, ok := el.(*ast.KeyValueExpr); ok {
					if inner, ok := kv.Value.(*ast.CallExpr); ok {
						if id, ok := inner.Fun.(*ast.Ident); ok && id.Name == "credKey" {
							return true
						}
					}
				}
			}
		}
	}
	return false
}

// notesSummary reports whether body calls b.summary.noteCred or
// noteCredDeleted.
func notesSummary(body *ast.BlockStmt) bool {
	found := false
	ast.Inspect(body, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok && (sel.Sel.Name == "noteCred" || sel.Sel.Name == "noteCredDeleted") {
			found = true
		}
		return !found
	})
	return found
}
