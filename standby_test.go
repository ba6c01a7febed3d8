package nebula

import (
	"context"
	"testing"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

// Issue 15: a token read on a node that cannot write storage (OpenBao
// standby serving reads, Vault performance standby) is forwarded to the
// active node by default, so its audit event is recorded there; with
// standby_token_reads=local it is served on the standby, without an engine
// audit event (the standby could never store it). A write refused as
// read-only leaves no event on the standby either: the active node
// records the forwarded request's.
func TestStandbyTokenReads(t *testing.T) {
	e := newTestBackend(t)
	v := &vaultBackend{e.b}
	handle := func(op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
		return v.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Data: data, Storage: e.storage})
	}
	e.mustRequest(t, logical.CreateOperation, "creds/k", map[string]any{"type": "api_key", "api_key": "standby-SECRET"})
	require.Equal(t, "forward", e.mustRequest(t, logical.ReadOperation, "config", nil).Data["standby_token_reads"], "default")
	e.mustRequest(t, logical.ReadOperation, "token/k", nil) // cached on this node
	pending := e.b.auditLog.pending()

	standby := func() {
		e.sys.ReplicationStateVal = consts.ReplicationPerformanceStandby
		e.storage.failPutsWith(readOnlyPut)
	}
	active := func() {
		e.sys.ReplicationStateVal = 0
		e.storage.failPutsWith(nil)
	}

	standby()
	resp, err := handle(logical.ReadOperation, "token/k", nil)
	require.ErrorIs(t, err, logical.ErrReadOnly, "a cached token read on a standby is forwarded by default (answered %v)", resp)
	_, err = handle(logical.UpdateOperation, "token/k", map[string]any{"execution_id": "x"})
	require.ErrorIs(t, err, logical.ErrReadOnly, "token write with a caller context")
	_, err = handle(logical.ReadOperation, "token/missing", nil)
	require.ErrorIs(t, err, logical.ErrReadOnly, "even a missing name: the active node answers")
	_, err = handle(logical.UpdateOperation, "creds/k", map[string]any{"description": "d"})
	require.ErrorIs(t, err, logical.ErrReadOnly, "creds/ write")
	// A write is forwarded before its handler decides anything on the
	// standby's (possibly stale) copy of storage.
	e.storage.failPutsWith(nil)
	_, err = handle(logical.DeleteOperation, "creds/absent", nil)
	require.ErrorIs(t, err, logical.ErrReadOnly, "delete of a name the standby does not know (yet)")
	_, err = handle(logical.UpdateOperation, "creds/absent/rotation", map[string]any{"interval": "1h"})
	require.ErrorIs(t, err, logical.ErrReadOnly, "rotation policy of a name the standby does not know (yet)")
	e.storage.failPutsWith(readOnlyPut)
	require.Equal(t, pending, e.b.auditLog.pending(), "a standby buffers no audit event of forwarded requests")
	// Only the active node can flush its buffer before a query, and a
	// standby's storage may lag: audit queries are forwarded.
	_, err = handle(logical.ReadOperation, "audit", nil)
	require.ErrorIs(t, err, logical.ErrReadOnly, "audit query on a standby")
	_, err = handle(logical.UpdateOperation, "audit/export", map[string]any{"format": "csv"})
	require.ErrorIs(t, err, logical.ErrReadOnly, "audit export on a standby")
	// Health and metrics are the active node's: it runs the background
	// work and holds the counters of forwarded reads.
	for _, r := range []struct {
		path string
		data map[string]any
	}{{"health", nil}, {"metrics", nil}, {"metrics", map[string]any{"format": "prometheus"}}, {"metrics/k", nil}} {
		resp, err := handle(logical.ReadOperation, r.path, r.data)
		require.ErrorIs(t, err, logical.ErrReadOnly, "%s %v on a standby (answered %v)", r.path, r.data, resp)
	}

	active()
	e.mustRequest(t, logical.UpdateOperation, "config", map[string]any{"standby_token_reads": "local"})
	require.Equal(t, "local", e.mustRequest(t, logical.ReadOperation, "config", nil).Data["standby_token_reads"])
	pending = e.b.auditLog.pending()
	standby()
	resp, err = handle(logical.ReadOperation, "token/k", nil)
	require.NoError(t, err, "local: served on the standby")
	require.Equal(t, "standby-SECRET", resp.Data["access_token"])
	require.Equal(t, pending, e.b.auditLog.pending(), "local: no engine audit event on the standby (it could never be stored)")

	active()
	_, err = e.request(t, logical.UpdateOperation, "config", map[string]any{"standby_token_reads": "sometimes"})
	require.Error(t, err, "an unknown value is refused")
	require.Contains(t, err.Error(), "standby_token_reads")
	e.mustRequest(t, logical.ReadOperation, "token/k", nil)
	require.Equal(t, pending+1, e.b.auditLog.pending(), "the active node audits its reads")
}
