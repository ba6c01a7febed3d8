package mirror

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"unicode"
)

// AWSConfig configures the AWS Secrets Manager target (engine path
// mirror/aws). Field comments name the path's fields.
type AWSConfig struct {
	// Region is the AWS region, e.g. "eu-west-1" (region). Required.
	Region string
	// Endpoint replaces the Secrets Manager endpoint (endpoint), e.g. a VPC
	// endpoint or a local emulator. https, or http for loopback hosts only.
	Endpoint string
	// STSEndpoint replaces the STS endpoint used to assume RoleARN; empty
	// means the SDK's regional STS endpoint.
	STSEndpoint string
	// AccessKey and SecretKey are static credentials (access_key,
	// secret_key); both or neither. Neither means the SDK's default chain.
	AccessKey string
	SecretKey string
	// RoleARN is a role to assume with the credentials above (role_arn).
	RoleARN string
	// KMSKeyID encrypts secrets the target creates (kms_key_id): key ID, key
	// ARN, alias name ("alias/...") or alias ARN. Empty means the AWS managed
	// key aws/secretsmanager. Applies when a secret is created; existing
	// secrets keep their key.
	KMSKeyID string
	// NameTemplate maps a credential name to a secret name (name_template);
	// it must contain "<name>" once. Empty means DefaultAWSNameTemplate.
	NameTemplate string
	// Tags are set on every secret (tags), besides the engine's own
	// "nebula:credential" and "nebula:version". Tags removed from this map
	// stay on existing secrets.
	Tags map[string]string
	// RecoveryWindowDays, when not zero (7 to 30), makes Delete schedule the
	// deletion after that many days instead of deleting at once.
	RecoveryWindowDays int
}

var (
	awsRegionRegexp  = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)
	awsRoleARNRegexp = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$`)
	awsTagRegexp     = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
)

// AWS tag limits: 50 tags per secret, of which the engine sets 2.
const (
	awsMaxUserTags  = 48
	awsMaxTagKey    = 128
	awsMaxTagValue  = 256
	awsMaxKMSKeyLen = 2048
)

// Validate reports every problem of c at once, naming the fields as the
// engine's mirror/aws path does. It never includes secret_key.
func (c AWSConfig) Validate() error {
	var errs []error
	if c.Region == "" {
		errs = append(errs, errors.New("region is required"))
	} else if !awsRegionRegexp.MatchString(c.Region) {
		errs = append(errs, fmt.Errorf("region %q is not an AWS region name such as us-east-1", c.Region))
	}
	if c.Endpoint != "" {
		if err := validateEndpoint("endpoint", c.Endpoint, true); err != nil {
			errs = append(errs, err)
		}
	}
	if c.STSEndpoint != "" {
		if err := validateEndpoint("sts_endpoint", c.STSEndpoint, true); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, c.validateCredentials()...)
	if c.KMSKeyID != "" && (len(c.KMSKeyID) > awsMaxKMSKeyLen || strings.ContainsFunc(c.KMSKeyID, unicode.IsSpace)) {
		errs = append(errs, errors.New("kms_key_id must be a key ID, key ARN, alias name or alias ARN without spaces"))
	}
	if c.NameTemplate != "" {
		if err := validateTemplate(c.NameTemplate, awsNameChar, awsMaxNameLen); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, validateAWSTags(c.Tags)...)
	if d := c.RecoveryWindowDays; d != 0 && (d < 7 || d > 30) {
		errs = append(errs, fmt.Errorf("recovery_window_days %d must be 0 (delete at once) or from 7 to 30", d))
	}
	return errors.Join(errs...)
}

func (c AWSConfig) validateCredentials() []error {
	var errs []error
	switch {
	case c.AccessKey != "" && c.SecretKey == "":
		errs = append(errs, errors.New("secret_key is required with access_key"))
	case c.AccessKey == "" && c.SecretKey != "":
		errs = append(errs, errors.New("access_key is required with secret_key"))
	}
	if strings.ContainsFunc(c.AccessKey, unicode.IsSpace) {
		errs = append(errs, errors.New("access_key must not contain spaces"))
	}
	if strings.ContainsFunc(c.SecretKey, unicode.IsSpace) {
		errs = append(errs, errors.New("secret_key must not contain spaces"))
	}
	if c.RoleARN != "" && !awsRoleARNRegexp.MatchString(c.RoleARN) {
		errs = append(errs, fmt.Errorf("role_arn %q is not an IAM role ARN such as arn:aws:iam::123456789012:role/name", c.RoleARN))
	}
	return errs
}

func validateAWSTags(tags map[string]string) []error {
	var errs []error
	if len(tags) > awsMaxUserTags {
		errs = append(errs, fmt.Errorf("tags has %d entries; at most %d are allowed", len(tags), awsMaxUserTags))
	}
	for _, k := range sortedKeys(tags) {
		v := tags[k]
		switch {
		case k == "" || len(k) > awsMaxTagKey:
			errs = append(errs, fmt.Errorf("tags key %q must have 1 to %d characters", k, awsMaxTagKey))
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			errs = append(errs, fmt.Errorf("tags key %q uses the reserved prefix aws:", k))
		case strings.HasPrefix(k, "nebula:"):
			errs = append(errs, fmt.Errorf("tags key %q uses the prefix nebula:, reserved for the engine", k))
		case !awsTagRegexp.MatchString(k):
			errs = append(errs, fmt.Errorf("tags key %q may hold only letters, digits, spaces and _.:/=+-@", k))
		}
		if len(v) > awsMaxTagValue || !awsTagRegexp.MatchString(v) {
			errs = append(errs, fmt.Errorf("tags value of %q must have at most %d letters, digits, spaces and _.:/=+-@", k, awsMaxTagValue))
		}
	}
	return errs
}

// validateEndpoint checks an endpoint URL: absolute, https (or http to a
// loopback host when allowHTTP), no user info, query or fragment.
func validateEndpoint(field, raw string, allowLoopbackHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s is not a valid URL", field)
	}
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%s %q must be an absolute https URL", field, u.Redacted())
	}
	var problems []string
	if u.Scheme == "http" && !(allowLoopbackHTTP && isLoopbackHost(u.Hostname())) {
		if allowLoopbackHTTP {
			problems = append(problems, "must use https (http is accepted for loopback hosts only)")
		} else {
			problems = append(problems, "must use https")
		}
	}
	if u.User != nil {
		problems = append(problems, "must not contain user information")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		problems = append(problems, "must not have a query or fragment")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s %q %s", field, u.Redacted(), strings.Join(problems, " and "))
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
