package nebula

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/hashicorp/go-uuid"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
)

// flowLocks serialise work on one flow (and on one state's index entry).
// They are apart from the credential locks because a flow that completes
// takes its credential's lock while holding the flow's, and two keys of one
// lock table can share a lock. The table is per process, shared by the
// mounts of a multiplexed plugin: flow ids are UUIDs, so sharing costs at
// most some contention.
var flowLocks = locksutil.CreateLocks()

func flowLock(key string) *locksutil.LockEntry { return locksutil.LockForKey(flowLocks, key) }

func flowKey(id string) string { return flowPrefix + id }

func flowStateKey(hash string) string { return flowStatePrefix + hash }

func stateHash(state string) string { return hexSHA256([]byte(state)) }

// loadFlow reads a flow; nil when it does not exist.
func loadFlow(ctx context.Context, s logical.Storage, id string) (*flow, error) {
	entry, err := s.Get(ctx, flowKey(id))
	if err != nil {
		return nil, flowStorageError("reading flow", err)
	}
	if entry == nil {
		return nil, nil
	}
	f := &flow{}
	if err := entry.DecodeJSON(f); err != nil {
		return nil, storageError("decoding flow", err)
	}
	return f, nil
}

// saveFlow writes a flow, and with stateHash its state index entry first
// (nothing can use the index entry before the flow exists).
func saveFlow(ctx context.Context, s logical.Storage, f *flow, stateHash string) error {
	entry, err := jsonEntry(flowKey(f.ID), f, true)
	if err != nil {
		return fmt.Errorf("encoding flow: %w", err)
	}
	var staged []*logical.StorageEntry
	if stateHash != "" {
		staged = append(staged, &logical.StorageEntry{Key: flowStateKey(stateHash), Value: []byte(f.ID), SealWrap: true})
	}
	if err := commitEntries(ctx, s, staged, entry); err != nil {
		return flowStorageError("writing flow", err)
	}
	return nil
}

// flowStorageError is storageError, except that Vault's read-only storage
// error (a performance standby) passes unchanged, so Vault forwards the
// request to the active node.
func flowStorageError(op string, err error) error {
	if errors.Is(err, logical.ErrReadOnly) {
		return logical.ErrReadOnly
	}
	return storageError(op, err)
}

// takeState consumes the state index entry of state and returns the flow id
// it named. With wantID set, a state of another flow is refused and left in
// place. A state is consumed before anything else happens with it, so it
// works once, however the flow continues.
func takeState(ctx context.Context, s logical.Storage, state, wantID string) (string, error) {
	hash := stateHash(state)
	lock := flowLock(flowStatePrefix + hash)
	lock.Lock()
	defer lock.Unlock()
	entry, err := s.Get(ctx, flowStateKey(hash))
	if err != nil {
		return "", flowStorageError("reading flow state", err)
	}
	if entry == nil {
		return "", newError(KindInvalidCallback, "the state is unknown or was already used")
	}
	id := string(entry.Value)
	if wantID != "" && subtle.ConstantTimeCompare([]byte(id), []byte(wantID)) != 1 {
		return "", newError(KindInvalidCallback, "the state does not belong to flow %s", wantID)
	}
	if err := s.Delete(ctx, flowStateKey(hash)); err != nil {
		return "", flowStorageError("consuming flow state", err)
	}
	return id, nil
}

// randomState returns 256 random bits, base64url-encoded.
func randomState() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating state: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// newFlowID returns a new flow id (a UUID).
func newFlowID() (string, error) {
	id, err := uuid.GenerateUUID()
	if err != nil {
		return "", fmt.Errorf("generating flow id: %w", err)
	}
	return id, nil
}

// deleteFlow deletes a flow, its state index entry first: a flow whose
// record outlives a failed delete can no longer be redeemed. The caller
// holds the flow's lock.
func deleteFlow(ctx context.Context, s logical.Storage, f *flow) error {
	if f.StateHash != "" {
		if err := s.Delete(ctx, flowStateKey(f.StateHash)); err != nil {
			return flowStorageError("deleting flow state", err)
		}
	}
	if err := s.Delete(ctx, flowKey(f.ID)); err != nil {
		return flowStorageError("deleting flow", err)
	}
	return nil
}
