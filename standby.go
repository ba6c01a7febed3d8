package nebula

// Nodes that cannot write storage: Vault performance standbys and
// secondaries, OpenBao standbys serving reads. The engine asks the host
// whether this node may write, and a request that needs to write (or the
// active node's view) answers logical.ErrReadOnly, which makes the host
// forward it to the active node (vaultBackend.HandleRequest).

import (
	"errors"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// writableCacheTTL is how long the node's role (writable or standby) is
// taken as known between questions to Vault.
const writableCacheTTL = time.Second

// writable reports whether this node may write storage and run background
// work (not a performance standby or a secondary). Asking Vault is two
// gRPC calls for an external plugin, and token reads ask on every request,
// so the answer is kept for writableTTL (a node changes role only through
// a step-down or promotion, after which Vault sets the mount up again).
func (b *backend) writable() bool {
	if b.writableTTL > 0 {
		if until := b.writableUntil.Load(); until != 0 && time.Now().UnixNano() < until {
			return b.writableVal.Load()
		}
	}
	state := b.System().ReplicationState()
	var ok bool
	if b.System().LocalMount() {
		ok = !state.HasState(consts.ReplicationDRSecondary)
	} else {
		ok = !state.HasState(consts.ReplicationPerformanceSecondary | consts.ReplicationPerformanceStandby | consts.ReplicationDRSecondary)
	}
	if b.writableTTL > 0 {
		b.writableVal.Store(ok)
		b.writableUntil.Store(time.Now().Add(b.writableTTL).UnixNano())
	}
	return ok
}

// forwardWrite reports whether req is a write that a node which cannot
// write storage forwards without running it: creates, updates, patches and
// deletes, except token/<name> (a read with a caller context; its handler
// follows standby_token_reads).
func forwardWrite(req *logical.Request) bool {
	switch req.Operation {
	case logical.CreateOperation, logical.UpdateOperation, logical.PatchOperation, logical.DeleteOperation:
		return !strings.HasPrefix(req.Path, "token/")
	}
	return false
}

// isReadOnly reports whether err says that storage is read-only: it is
// logical.ErrReadOnly, or has a cause whose message holds its text (an
// external plugin's gRPC storage client rebuilds storage errors with
// errors.New, which loses the sentinel). Only causes below the engine's own
// errors are matched, so text in an engine message (which may quote an
// upstream's field names) never counts.
func isReadOnly(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, logical.ErrReadOnly) {
		return true
	}
	var causes []error
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		if next := u.Unwrap(); next != nil {
			causes = []error{next}
		}
	case interface{ Unwrap() []error }:
		causes = u.Unwrap()
	}
	if len(causes) == 0 {
		var ce *CredentialError
		return !errors.As(err, &ce) && strings.Contains(err.Error(), logical.ErrReadOnly.Error())
	}
	for _, cause := range causes {
		if isReadOnly(cause) {
			return true
		}
	}
	return false
}

// onActiveNode answers logical.ErrReadOnly on a node that cannot write (an
// OpenBao standby serving reads, a Vault performance standby), so the host
// forwards the request to the active node; nil on the active node. Callers
// say why their request must run there.
func (b *backend) onActiveNode() error {
	if !b.writable() {
		return logical.ErrReadOnly
	}
	return nil
}
