// This file holds the Target interface and what its implementations share.

package mirror

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"

	"github.com/hashicorp/vault/sdk/helper/locksutil"
)

// Target is a place credentials are mirrored to.
type Target interface {
	// Name is the target's name: "aws" or "azure".
	Name() string

	// Put writes content as the newest version of the secret for the
	// credential named credential. version is the engine's monotonically
	// increasing version number of that credential. Put is idempotent and
	// never lets an older version overwrite a newer one: a Put older than
	// what the target holds returns nil without writing.
	Put(ctx context.Context, credential string, version int, content []byte) error

	// Delete removes the secret for the credential. Deleting a secret that
	// does not exist succeeds.
	Delete(ctx context.Context, credential string) error
}

// Target names, as returned by Target.Name and used in the engine's
// credential field "mirror".
const (
	NameAWS   = "aws"
	NameAzure = "azure"
)

// contentType is the content type of mirrored documents.
const contentType = "application/json"

// Operation names used in *Error.
const (
	opPut    = "put"
	opDelete = "delete"
)

// keyLocks serializes the operations of one target on one remote secret, so
// the version check and the write of one Put are not interleaved with another
// Put or Delete of the same credential from this process.
type keyLocks struct {
	locks []*locksutil.LockEntry
}

func newKeyLocks() keyLocks {
	return keyLocks{locks: locksutil.CreateLocks()}
}

// lock locks key and returns the function that unlocks it.
func (k keyLocks) lock(key string) func() {
	l := locksutil.LockForKey(k.locks, key)
	l.Lock()
	return l.Unlock
}

// checkPut validates the arguments of a Put that do not depend on the target.
func checkPut(target, name string, version int, content []byte, maxSize int) error {
	switch {
	case version < 0:
		return localError(target, opPut, name, "invalid_version", "version must not be negative")
	case len(content) > maxSize:
		return localError(target, opPut, name, "content_too_large",
			"content is "+strconv.Itoa(len(content))+" bytes; the target accepts at most "+strconv.Itoa(maxSize))
	case !json.Valid(content):
		return localError(target, opPut, name, "invalid_content", "content is not a JSON document")
	}
	return nil
}

// parseVersion reads an engine version tag. A missing or malformed tag reads
// as -1, older than any version, so the next Put repairs it.
func parseVersion(tag string, ok bool) int {
	if !ok {
		return -1
	}
	v, err := strconv.Atoi(tag)
	if err != nil || v < 0 {
		return -1
	}
	return v
}

// sortedKeys returns the keys of m in order, so messages and requests built
// from a map are deterministic.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
