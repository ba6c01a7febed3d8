package harness

import (
	"strings"
	"time"
)

// Option changes how a server is started.
type Option func(*options)

type options struct {
	mount        string // "" means: register the plugin but do not mount it
	register     bool
	logLevel     string
	startTimeout time.Duration
	// auditFile is the file of a file audit device at path "file/"; ""
	// means none.
	auditFile string
	// maxJSONStrings and maxJSONMemory are OpenBao listener limits; 0
	// keeps the host's default.
	maxJSONStrings, maxJSONMemory int64
}

func defaultOptions() options {
	return options{mount: DefaultMount, register: true, logLevel: "info", startTimeout: defaultStartTimeout}
}

// WithMount mounts the plugin at path instead of nebula/; "" registers the
// plugin without mounting it.
func WithMount(path string) Option { return func(o *options) { o.mount = strings.Trim(path, "/") } }

// WithoutPlugin starts a server without registering or mounting the plugin
// (a dev server still auto-registers it, unversioned, from its plugin
// directory).
func WithoutPlugin() Option { return func(o *options) { o.register, o.mount = false, "" } }

// WithLogLevel sets the server's log level (trace, debug, info, warn,
// error).
func WithLogLevel(level string) Option { return func(o *options) { o.logLevel = level } }

// WithFileAudit gives the server a file audit device at path "file/"
// writing to file. On Vault the harness enables it through the API (`vault
// audit enable file file_path=...`) once the server is up; OpenBao refuses
// that (audit devices are declared in its server configuration), so there
// the harness declares it in the configuration:
//
//	audit "file" "file" {
//	  options {
//	    file_path = "<file>"
//	  }
//	}
//
// A dev server gets that block from an extra -config file.
func WithFileAudit(file string) Option { return func(o *options) { o.auditFile = file } }

// WithListenerLimits raises (or lowers) OpenBao's listener limits on
// request bodies: max_request_json_strings (default 1000 strings) and
// max_request_json_memory (default 34,078,720 bytes); 0 keeps a default.
// OpenBao refuses a request over them before it reaches the plugin. Vault
// has no such settings; there the option does nothing. The limits are
// listener settings, so they need a server with a configuration file
// (StartFile, StartCluster): an OpenBao dev server fails to start with
// them.
func WithListenerLimits(maxStrings, maxMemory int64) Option {
	return func(o *options) { o.maxJSONStrings, o.maxJSONMemory = maxStrings, maxMemory }
}

// WithStartTimeout bounds how long a start (process up, healthy, unsealed,
// plugin mounted) may take.
func WithStartTimeout(d time.Duration) Option { return func(o *options) { o.startTimeout = d } }
