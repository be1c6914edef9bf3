// Package dxtratest provides an in-process fake of the Dxtra backend for tests, in the
// spirit of net/http/httptest: a Hasura Auth (Nhost) service that exchanges Personal
// Access Tokens and rotates refresh tokens, and a Hasura GraphQL Engine that checks the
// JWTs it issued, both listening on loopback and speaking the wire protocol described in
// shared/PROTOCOL.md (observed bodies, status codes, header rules).
//
// NewServer starts both servers; Server.AuthBaseURL is what a token exchanger calls and
// Server.APIURL is the upstream a proxy forwards to. Knobs on Server inject failures
// (FailNext, SetDown), revoke credentials (RevokePAT, RevokeAccessToken,
// RotateSigningKey, SetUserDisabled), switch behaviours (SetConcealErrors,
// SetGatewayMode) and observe traffic (Calls, Requests, WSSessions).
//
// # Auth service
//
// POST {prefix}/signin/pat with {"personalAccessToken":"<pat>"} answers 200
// {"session":{...}} and mints a new, separate refresh token on every call.
// POST {prefix}/token with {"refreshToken":"<token>"} answers 200 with the bare session
// object; the refresh token rotates (the old value dies at once, refreshTokenId stays),
// and of several concurrent uses of one token exactly one succeeds. Errors are
// {"error","message","status"} plus a newline (invalid-pat, invalid-refresh-token,
// disabled-user; 400 invalid-request when errors are concealed); malformed requests get
// the OpenAPI validator's 400 {"error":"<text>"}; a 429 has an empty body. Unknown paths
// and wrong methods get 404 "404 page not found" as text/plain.
//
// Access tokens are HS256 JWTs with exactly the real claims: exp, iat, iss
// "hasura-auth", sub, and the https://hasura.io/jwt/claims namespace with
// x-hasura-allowed-roles, x-hasura-default-role, x-hasura-user-id and
// x-hasura-user-is-anonymous "false". exp − iat is the configured lifetime in whole
// seconds, which is also accessTokenExpiresIn. One deliberate departure: the real server
// issues byte-identical JWTs for two sign-ins of one user within the same second; the
// fake keeps every token distinct by moving iat (and exp with it) one second forward
// when needed, so that "the renewed token differs from the rejected one" holds in tests.
//
// # GraphQL API
//
// Every request on APIURL is authenticated like Hasura in JWT mode: exactly one
// Authorization header of exactly two words, "Bearer <jwt>", verified with the current
// signing key and exp with zero clock skew; X-Hasura-Role (default: the token's default
// role) must be among the token's allowed roles; any X-Hasura-Admin-Secret or
// X-Hasura-Access-Key header is refused with access-denied. On /v1/graphql and
// /v1beta1/relay failures are HTTP 200 with {"errors":[{"extensions":{"path":"$",
// "code":...},"message":...}]}; on /v1alpha1/graphql the same body with HTTP 400; on other
// paths Hasura's {"path":"$","error":...,"code":...} with 400 (401 for the admin secret).
// With SetGatewayMode(true) a rejected JWT (invalid-jwt, invalid-headers) is HTTP 401
// instead, as when a gateway sits in front of Hasura.
//
// Authenticated POST /v1/graphql (also /v1alpha1/graphql, /v1beta1/relay) answers:
//   - a query mentioning dataControllers: {"data":{"dataControllers":[{"id":1,"title":...},...]}}
//     from SampleDataControllers;
//   - a query that is only {__typename}: {"data":{"__typename":"query_root"}};
//   - any other query: a Hasura validation-failed error (HTTP 200);
//   - a body that is not a JSON object with a string "query": an invalid-json or
//     parse-failed error (HTTP 200). GET answers the persisted-query error.
//
// Test paths, after the same authentication (any method):
//   - /slow?delay=2s waits (honouring the request context), then 200 {"data":{"slow":"2s"}};
//   - /stream?chunks=5&interval=50ms writes chunk lines "chunk <i>\n", flushing each one;
//   - /large?bytes=N writes LargeBody(N) with a Content-Length;
//   - /status?code=N answers status N.
//
// GET /healthz answers 200 "OK" without authentication; any other path is Hasura's 404
// {"path":"$","error":"resource does not exist","code":"not-found"}.
//
// # WebSocket
//
// /v1/graphql, /v1alpha1/graphql and /v1beta1/relay accept WebSocket upgrades speaking
// graphql-transport-ws (chosen only when there is exactly one Sec-WebSocket-Protocol
// header whose whole value is graphql-transport-ws) or Apollo's graphql-ws (otherwise;
// the chosen subprotocol is always echoed). Authentication reads connection_init
// payload.headers first, then the upgrade request's headers. Subscriptions on
// dataControllers or tick send a message every Options.TickInterval. At the JWT's exp the
// connection is torn down without a close frame, as Hasura does. Sessions are recorded
// and available from WSSessions.
package dxtratest
