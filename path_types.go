package nebula

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/types"
)

func pathTypes(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "types/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "types"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathTypesList, Responses: typesListResponses},
			},
			HelpSynopsis:    "List the supported credential types.",
			HelpDescription: "Lists the credential types with a short description of each.",
		},
		{
			Pattern:      "types/" + framework.GenericNameRegex("type"),
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "type"},
			Fields: map[string]*framework.FieldSchema{
				"type": {Type: framework.TypeString, Description: "Name of the credential type."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathTypeRead, Responses: typeResponses},
			},
			HelpSynopsis:    "Read a credential type's field schema.",
			HelpDescription: "Shows the fields of a credential type (which are secret, which are required, their allowed values), its grants, and whether it can be refreshed and rotated.",
		},
	}
}

func (b *backend) pathTypesList(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
	names := types.Names()
	info := make(map[string]any, len(names))
	for _, name := range names {
		t, _ := types.Lookup(name)
		info[name] = map[string]any{"description": t.Description}
	}
	return logical.ListResponseWithInfo(names, info), nil
}

func (b *backend) pathTypeRead(_ context.Context, _ *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("type").(string)
	t, ok := types.Lookup(name)
	if !ok {
		return nil, newError(KindNotFound, "credential type %q does not exist", name)
	}
	fields := make([]map[string]any, 0, len(t.Fields))
	for _, f := range t.Fields {
		field := map[string]any{
			"name":        f.Name,
			"kind":        string(f.Kind),
			"description": f.Description,
			"secret":      f.Secret,
			"required":    f.Required,
		}
		if f.Default != nil {
			field["default"] = f.Default
		}
		if len(f.Allowed) > 0 {
			field["allowed"] = f.Allowed
		}
		fields = append(fields, field)
	}
	return &logical.Response{Data: map[string]any{
		"name":              t.Name,
		"description":       t.Description,
		"fields":            fields,
		"secret_fields":     nonNil(t.SecretFields()),
		"grants":            nonNil(t.Grants),
		"supports_refresh":  t.Refreshable,
		"supports_rotation": t.Rotatable,
	}}, nil
}
