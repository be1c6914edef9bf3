// Package tokencache keeps a fresh Dxtra access token (a Hasura JWT) for a Personal
// Access Token (PAT).
//
// A [Cache] exchanges the PAT at the auth service (Nhost / Hasura Auth) once, then keeps
// the access token fresh through the rotating refresh token, in a background loop
// ([Cache.Run]). Callers read the current token lock-free with [Cache.Token], ask for a
// replacement after an upstream rejection with [Cache.Renew] (coalesced: a burst of
// rejections costs one exchange), and check readiness with [Cache.Ready].
//
// The wire side is an [Exchanger]; [HTTPExchanger] speaks the real protocol
// (POST {BaseURL}/signin/pat and POST {BaseURL}/token). Every credential is held in a
// [Secret], which prints only a short SHA-256 fingerprint.
package tokencache
