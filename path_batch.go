package nebula

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// maxBatchItems bounds one batch request.
const maxBatchItems = 5000

func pathBatch(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "batch/create$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationVerb: "batch-create", OperationSuffix: "credentials"},
			Fields: map[string]*framework.FieldSchema{
				"items": {Type: framework.TypeSlice, Description: "Credentials to create or update: objects with name plus the fields of creds/<name>."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathBatchCreate, Responses: batchResponses("id and version of the credential written")},
			},
			HelpSynopsis:    "Create or update many credentials at once.",
			HelpDescription: "Each item is written as creds/<name> would be (idempotency keys included). results has one object per item, in order: name and id, or error (code prefix and message). One bad item does not fail the others.",
		},
		{
			Pattern:      "batch/delete$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationVerb: "batch-delete", OperationSuffix: "credentials"},
			Fields: map[string]*framework.FieldSchema{
				"names": {Type: framework.TypeCommaStringSlice, Description: "Names of the credentials to delete."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathBatchDelete, Responses: batchResponses("deleted (false when it did not exist)")},
			},
			HelpSynopsis:    "Delete many credentials at once.",
			HelpDescription: "results has one object per name, in order: name and deleted (false when it did not exist), or error.",
		},
	}
}

// batchItem runs one item through the same handler creds/<name> uses, so a
// batch item behaves exactly like a single write. The caller has validated
// name (validateName), and it checks again, so no item reaches another
// path.
func (b *backend) batchItem(ctx context.Context, req *logical.Request, op logical.Operation, name string, data map[string]any) (*logical.Response, error) {
	if err := validateName(name); err != nil {
		return nil, invalidInput(err) // never route a name that leaves creds/<name>
	}
	sub := &logical.Request{
		Operation:   op,
		Path:        "creds/" + name,
		Data:        data,
		Storage:     req.Storage,
		DisplayName: req.DisplayName,
		EntityID:    req.EntityID,
		MountPoint:  req.MountPoint,
	}
	resp, err := b.HandleRequest(ctx, sub)
	if err == nil && resp != nil && resp.IsError() {
		err = newError(KindInvalidInput, "%s", resp.Error().Error())
	}
	return resp, err
}

func (b *backend) pathBatchCreate(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	items := d.Get("items").([]any)
	if len(items) == 0 || len(items) > maxBatchItems {
		return nil, newError(KindInvalidInput, "field \"items\" must hold 1 to %d items", maxBatchItems)
	}
	results := make([]map[string]any, len(items))
	var failed int
	for i, raw := range items {
		item, ok := raw.(map[string]any)
		name, _ := item["name"].(string)
		result := map[string]any{"name": name}
		results[i] = result
		var err error
		switch {
		case !ok:
			err = newError(KindInvalidInput, "item %d is not an object", i)
		case name == "":
			err = newError(KindInvalidInput, "item %d has no name", i)
		case validateName(name) != nil:
			// Checked before routing: a name with "/" would reach
			// another path (creds/<victim>/rotation).
			err = newError(KindInvalidInput, "item %d: %v", i, validateName(name))
		default:
			data := make(map[string]any, len(item))
			for k, v := range item {
				if k != "name" {
					data[k] = v
				}
			}
			var resp *logical.Response
			if resp, err = b.batchItem(ctx, req, logical.UpdateOperation, name, data); err == nil {
				result["id"], result["version"] = resp.Data["id"], resp.Data["version"]
			}
		}
		if err != nil {
			failed++
			result["error"] = err.Error()
		}
	}
	return &logical.Response{Data: map[string]any{
		"results":   results,
		"succeeded": len(items) - failed,
		"failed":    failed,
	}}, nil
}

func (b *backend) pathBatchDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	names := d.Get("names").([]string)
	if len(names) == 0 || len(names) > maxBatchItems {
		return nil, newError(KindInvalidInput, "field \"names\" must hold 1 to %d names", maxBatchItems)
	}
	results := make([]map[string]any, len(names))
	var failed int
	for i, name := range names {
		result := map[string]any{"name": name}
		results[i] = result
		existed, err := b.credentialExistsByName(ctx, req.Storage, name)
		if err == nil {
			_, err = b.batchItem(ctx, req, logical.DeleteOperation, name, nil)
		}
		if err != nil {
			failed++
			result["error"] = err.Error()
			continue
		}
		result["deleted"] = existed
	}
	return &logical.Response{Data: map[string]any{
		"results":   results,
		"succeeded": len(names) - failed,
		"failed":    failed,
	}}, nil
}

func (b *backend) credentialExistsByName(ctx context.Context, s logical.Storage, name string) (bool, error) {
	if err := validateName(name); err != nil {
		return false, invalidInput(err)
	}
	c, err := loadCredential(ctx, s, name)
	return c != nil, err
}
