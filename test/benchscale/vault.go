package main

// The Vault side of the benchmark comes from test/benchserver, with a
// server config that lifts Vault's 90 s request limit: a slow `refresh` of
// many credentials must be measured, not cut off.

import (
	"fmt"
	"time"

	"github.com/nebula-credential/nebula-credential/test/benchserver"
)

const (
	rootToken     = benchserver.RootToken
	pluginVersion = "v0.1.0-benchscale"
	// maxRequestDuration is the server's default_max_request_duration.
	maxRequestDuration = 10 * time.Minute
)

// serverOptions raise the request duration limit, bound the API client by
// it, turn off its retries and stop the server when this process dies.
var serverOptions = benchserver.Options{
	Config:         fmt.Sprintf("default_max_request_duration = %q\n", maxRequestDuration),
	ClientTimeout:  maxRequestDuration,
	NoRetries:      true,
	KillWithParent: true,
}
