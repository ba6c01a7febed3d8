package nebula

import (
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// componentRef is how the framework's OpenAPI document names a schema.
const componentRef = "#/components/schemas/"

// inlineOpenAPISchemas replaces the "$ref" of every request and response
// body in a help answer's OpenAPI document by the schema it names (the
// components stay). Vault decodes an external plugin's document with
// mapstructure (framework.NewOASDocumentFromMap), which drops "$ref"
// (OASSchema.Ref has no mapstructure tag): without this,
// sys/internal/specs/openapi would show every body of the engine as {}.
func inlineOpenAPISchemas(resp *logical.Response) {
	if resp == nil {
		return
	}
	doc, ok := resp.Data["openapi"].(*framework.OASDocument)
	if !ok || doc == nil {
		return
	}
	for _, item := range doc.Paths {
		for _, op := range []*framework.OASOperation{item.Get, item.Post, item.Patch, item.Delete} {
			if op == nil {
				continue
			}
			if rb := op.RequestBody; rb != nil {
				op.RequestBody = &framework.OASRequestBody{Description: rb.Description, Required: rb.Required, Content: inlineContent(doc, rb.Content)}
			}
			for code, r := range op.Responses {
				// A copy: the framework shares some responses
				// (framework.OASStdRespListOK) between documents.
				op.Responses[code] = &framework.OASResponse{Description: r.Description, Content: inlineContent(doc, r.Content)}
			}
		}
	}
}

// inlineContent returns a copy of content whose schema references are
// replaced by the schemas they name.
func inlineContent(doc *framework.OASDocument, content framework.OASContent) framework.OASContent {
	if content == nil {
		return nil
	}
	out := make(framework.OASContent, len(content))
	for mediaType, m := range content {
		if m == nil || m.Schema == nil || !strings.HasPrefix(m.Schema.Ref, componentRef) {
			out[mediaType] = m
			continue
		}
		if s, ok := doc.Components.Schemas[strings.TrimPrefix(m.Schema.Ref, componentRef)]; ok {
			out[mediaType] = &framework.OASMediaTypeObject{Schema: s}
		} else {
			out[mediaType] = m
		}
	}
	return out
}
