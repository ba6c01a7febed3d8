package mirror

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// NamePlaceholder is the part of a name template replaced by the credential
// name.
const NamePlaceholder = "<name>"

// Default name templates.
const (
	DefaultAWSNameTemplate   = "nebula/" + NamePlaceholder
	DefaultAzureNameTemplate = "nebula-" + NamePlaceholder
)

// Name limits of the targets.
const (
	awsMaxNameLen   = 512
	azureMaxNameLen = 127
)

// validateTemplate checks a name template: it holds NamePlaceholder exactly
// once and its other characters are allowed by the target.
func validateTemplate(tmpl string, allowed func(rune) bool, maxLen int) error {
	if n := strings.Count(tmpl, NamePlaceholder); n != 1 {
		return fmt.Errorf("name_template %q must contain %q exactly once", tmpl, NamePlaceholder)
	}
	static := strings.Replace(tmpl, NamePlaceholder, "", 1)
	for _, r := range static {
		if !allowed(r) {
			return fmt.Errorf("name_template %q has character %q, which the target does not allow in secret names", tmpl, r)
		}
	}
	if len(static) >= maxLen {
		return fmt.Errorf("name_template %q leaves no room for a name within %d characters", tmpl, maxLen)
	}
	return nil
}

// awsNameChar reports whether r may appear in an AWS Secrets Manager secret
// name: ASCII letters and digits and /_+=.@-.
func awsNameChar(r rune) bool {
	return isAlnum(r) || strings.ContainsRune("/_+=.@-", r)
}

// azureNameChar reports whether r may appear in a Key Vault secret name:
// ASCII letters and digits and '-'.
func azureNameChar(r rune) bool {
	return isAlnum(r) || r == '-'
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// renderAWSName renders the AWS secret name of a credential. Credential names
// are used as they are; a name with a character AWS does not allow is an
// error.
func renderAWSName(tmpl, credential string) (string, error) {
	if credential == "" {
		return "", errors.New("credential name is empty")
	}
	for _, r := range credential {
		if !awsNameChar(r) {
			return "", fmt.Errorf("credential name has character %q, which AWS does not allow in secret names", r)
		}
	}
	name := strings.Replace(tmpl, NamePlaceholder, credential, 1)
	if len(name) > awsMaxNameLen {
		return "", fmt.Errorf("secret name is %d characters; AWS allows at most %d", len(name), awsMaxNameLen)
	}
	return name, nil
}

// AzureSecretName maps a credential name to the part of a Key Vault secret
// name that replaces NamePlaceholder.
//
// Key Vault secret names allow only ASCII letters, digits and '-', and compare
// case-insensitively. A credential name made only of lower-case letters,
// digits and '-' is used as it is, unless it ends like a mapped name ('-' and
// 8 hex digits). Any other name has each disallowed character ('_', '.', ...)
// replaced by '-' and gets the suffix "-" plus the first 8 hex digits of the
// SHA-256 of the original name, so distinct credential names ("a_b", "a.b",
// "a-b", "A-B") do not share a secret:
//
//	"api-key"     -> "api-key"
//	"api_key"     -> "api-key-" + hex(sha256("api_key"))[:8]
//	"ApiKey"      -> "ApiKey-" + hex(sha256("ApiKey"))[:8]
//	"v-20240101"  -> "v-20240101-" + hex(sha256("v-20240101"))[:8]
func AzureSecretName(credential string) string {
	var b strings.Builder
	canonical := !hashSuffix.MatchString(credential)
	for _, r := range credential {
		switch {
		case r >= 'A' && r <= 'Z':
			canonical = false
			b.WriteRune(r)
		case azureNameChar(r):
			b.WriteRune(r)
		default:
			canonical = false
			b.WriteByte('-')
		}
	}
	if canonical {
		return credential
	}
	sum := sha256.Sum256([]byte(credential))
	return b.String() + "-" + hex.EncodeToString(sum[:4])
}

// hashSuffix matches the suffix AzureSecretName adds to mapped names.
var hashSuffix = regexp.MustCompile(`-[0-9a-f]{8}$`)

// renderAzureName renders the Key Vault secret name of a credential.
func renderAzureName(tmpl, credential string) (string, error) {
	if credential == "" {
		return "", errors.New("credential name is empty")
	}
	name := strings.Replace(tmpl, NamePlaceholder, AzureSecretName(credential), 1)
	if len(name) > azureMaxNameLen {
		return "", fmt.Errorf("secret name is %d characters; Key Vault allows at most %d", len(name), azureMaxNameLen)
	}
	return name, nil
}
