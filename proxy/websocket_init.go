package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
)

// The connection_init rewrite (SPEC behaviour 12): the one client message the relay
// parses.

// Refusals of a client's first message.
var (
	errInitNotObject = &wsClose{closeBadRequest, "invalid message: connection_init must be a JSON text message"}
	errInitFirst     = &wsClose{closeUnauthorized, "Unauthorized: connection_init must be the first message"}
	errInitBadRole   = &wsClose{closeBadRequest, "x-hasura-role in connection_init must be one string"}
	errInitRole      = &wsClose{closeForbidden, "Forbidden: x-hasura-role is not in DXTRA_ALLOWED_ROLES"}
)

// connectionInitType returns the "type" of a client message, or errInitNotObject when
// msg is not a JSON object with a string type.
func connectionInitType(msg []byte) (string, error) {
	var top map[string]json.RawMessage
	var typ *string
	if json.Unmarshal(msg, &top) != nil || json.Unmarshal(top["type"], &typ) != nil || typ == nil {
		return "", errInitNotObject
	}
	return *typ, nil
}

// rewriteConnectionInit returns the connection_init message msg with payload.headers
// holding exactly one Authorization ("Bearer " + jwt) and one X-Hasura-Role, and the
// role that is. The client's Authorization, Cookie, X-Hasura-* keys (and the other
// credential and forwarding headers SPEC behaviour 2 removes) are dropped in any case;
// a payload x-hasura-role is the client's role choice, checked with allowed (refused:
// errInitRole), else role (the upgrade's choice) stands. Every other header key and
// every other key of the payload and the message is kept; a missing, null or
// non-object payload (or headers) becomes an object. The error is a *wsClose when the
// message cannot be forwarded: not a connection_init object, two different roles, or a
// role not allowed. It is safe for concurrent use.
func rewriteConnectionInit(msg []byte, jwt, role string, allowed func(string) bool) (out []byte, chosen string, err error) {
	var top map[string]json.RawMessage
	if json.Unmarshal(msg, &top) != nil || top == nil {
		return nil, "", errInitNotObject
	}
	var typ string
	if json.Unmarshal(top["type"], &typ) != nil {
		return nil, "", errInitNotObject
	}
	if typ != "connection_init" {
		return nil, "", errInitFirst
	}

	var payload map[string]json.RawMessage
	if raw, ok := top["payload"]; ok {
		_ = json.Unmarshal(raw, &payload) // null or not an object: replaced
	}
	if payload == nil {
		payload = map[string]json.RawMessage{}
	}
	var headers map[string]json.RawMessage
	if raw, ok := payload["headers"]; ok {
		_ = json.Unmarshal(raw, &headers)
	}
	if headers == nil {
		headers = map[string]json.RawMessage{}
	}

	for k, v := range headers {
		if isHasuraRoleKey(k) {
			if string(v) != "null" {
				var r string
				if json.Unmarshal(v, &r) != nil {
					return nil, "", errInitBadRole
				}
				if r != "" {
					if chosen != "" && chosen != r {
						return nil, "", errInitBadRole
					}
					chosen = r
				}
			}
			delete(headers, k)
			continue
		}
		if strippedHeader(k) {
			delete(headers, k)
		}
	}
	if chosen == "" {
		chosen = role
	} else if !allowed(chosen) {
		return nil, "", errInitRole
	}

	if headers["Authorization"], err = marshalJSON("Bearer " + jwt); err != nil {
		return nil, "", err
	}
	if headers["X-Hasura-Role"], err = marshalJSON(chosen); err != nil {
		return nil, "", err
	}
	if payload["headers"], err = marshalJSON(headers); err != nil {
		return nil, "", err
	}
	if top["payload"], err = marshalJSON(payload); err != nil {
		return nil, "", err
	}
	if out, err = marshalJSON(top); err != nil {
		return nil, "", err
	}
	return out, chosen, nil
}

// isHasuraRoleKey reports whether a payload header name is X-Hasura-Role, as Hasura
// compares header names: ASCII case-insensitively.
func isHasuraRoleKey(k string) bool { return asciiEqualFold(k, "x-hasura-role") }

// marshalJSON encodes v without HTML escaping (the relay changes no more than it must)
// and without the encoder's trailing newline.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, errors.Join(errors.New("encode connection_init"), err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}

// jsonValid reports whether b is one complete JSON document.
func jsonValid(b []byte) bool { return json.Valid(b) }
