// Test-only OAuth 2.0 authorization server for connd's integration tests.
//
// Runs the real `oidc-provider` package with the client-credentials grant
// (RFC 6749 §4.4) enabled. Nothing about the OAuth behaviour is emulated here:
// this file only configures the provider and adds two test-only side routes.
//
// Environment:
//   OIDC_CLIENTS    JSON array of clients:
//                   [{"client_id":"a","client_secret":"s",
//                     "token_endpoint_auth_method":"client_secret_basic",
//                     "scope":"read write"}, ...]
//                   token_endpoint_auth_method is client_secret_basic (default)
//                   or client_secret_post; scope is optional.
//                   Other methods: client_secret_jwt (with client_secret),
//                   private_key_jwt (with "key_pem": a PEM key whose public half is
//                   registered as the client's JWKS, "kid" optional), tls_client_auth
//                   (with "tls_client_auth_subject_dn": "CN=<name>"). "token_exchange":
//                   true also registers the RFC 8693 grant for the client.
//   OIDC_TOKEN_TTL  lifetime of client-credentials access tokens in seconds
//                   (default 3600); the token response's expires_in.
//   OIDC_TLS        optional JSON {"cert": PATH, "key": PATH, "ca": PATH}: serve https
//                   with requestCert (mTLS, RFC 8705) trusting client certificates
//                   signed by "ca"; the provider's mTLS feature (tls_client_auth) is on.
//
// stdout carries exactly one line, printed once the server listens:
//   {"ready":true,"port":N,"issuer":"http://127.0.0.1:N","token_url":"http://127.0.0.1:N/token",
//    "stats_url":"http://127.0.0.1:N/_test/stats","reset_url":"http://127.0.0.1:N/_test/reset"}
// Everything else (the provider's notices and warnings, errors) goes to stderr.
//
// Test-only routes on the same server:
//   GET  /_test/stats  -> {"token_requests":N,"token_successes":M,
//                          "auth_methods":{"client_secret_basic":B,"client_secret_post":P,"none":Z}}
//                         token_requests: every request that reached the token endpoint
//                         path, whatever its method or outcome; token_successes: those
//                         answered 200 with an access token; auth_methods: how those
//                         requests presented client credentials (Authorization: Basic
//                         header, client_secret in the form body, or neither)
//   POST /_test/reset  -> zeroes all counters, answers the zeroed stats
//   GET  /_test/seen   -> every token request as the provider judged it:
//                         [{status, error, client_id, method, grant_type, assertion:
//                           {header, payload} | null, resource, audience, subject_token,
//                           access_token_claims}] (access_token_claims: the payload of a
//                         JWT access token issued for a resource indicator)
//
// The process exits on SIGTERM/SIGINT/SIGHUP and when its stdin reaches EOF, so a
// provider whose test process died (closing the pipe) never outlives it.

import * as http from 'node:http';
import * as https from 'node:https';
import * as fs from 'node:fs';
import * as crypto from 'node:crypto';

// oidc-provider prints its notices with console.info (stdout). stdout is reserved
// for the ready line, so route every console method to stderr before loading it.
for (const method of ['log', 'info', 'debug']) {
  // eslint-disable-next-line no-console
  console[method] = (...args) => console.error(...args);
}

function fail(message) {
  process.stderr.write(`oidc test server: ${message}\n`);
  process.exit(2);
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

function readClients() {
  const raw = process.env.OIDC_CLIENTS;
  if (!raw) fail('OIDC_CLIENTS is not set (a JSON array of clients)');
  let list;
  try {
    list = JSON.parse(raw);
  } catch (err) {
    fail(`OIDC_CLIENTS is not valid JSON: ${err.message}`);
  }
  if (!Array.isArray(list) || list.length === 0) fail('OIDC_CLIENTS must be a non-empty JSON array');
  return list.map((c, i) => {
    if (!c || typeof c !== 'object') fail(`OIDC_CLIENTS[${i}] is not an object`);
    if (typeof c.client_id !== 'string' || !c.client_id) fail(`OIDC_CLIENTS[${i}].client_id must be a non-empty string`);
    const method = c.token_endpoint_auth_method ?? 'client_secret_basic';
    const methods = ['client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt', 'tls_client_auth'];
    if (!methods.includes(method)) fail(`OIDC_CLIENTS[${i}].token_endpoint_auth_method must be one of ${methods.join(', ')}`);
    const secretMethod = method.startsWith('client_secret_');
    if (secretMethod && (typeof c.client_secret !== 'string' || !c.client_secret)) fail(`OIDC_CLIENTS[${i}].client_secret must be a non-empty string`);
    const scope = (c.scope ?? '').split(/\s+/).filter(Boolean).join(' ');
    const extra = {};
    if (method === 'private_key_jwt') {
      if (typeof c.key_pem !== 'string') fail(`OIDC_CLIENTS[${i}].key_pem is needed for private_key_jwt`);
      const jwk = crypto.createPublicKey(c.key_pem).export({ format: 'jwk' });
      extra.jwks = { keys: [{ ...jwk, ...(c.kid ? { kid: c.kid } : {}) }] };
    }
    if (method === 'tls_client_auth') extra.tls_client_auth_subject_dn = c.tls_client_auth_subject_dn;
    if (c.token_endpoint_auth_signing_alg) extra.token_endpoint_auth_signing_alg = c.token_endpoint_auth_signing_alg;
    return {
      client_id: c.client_id,
      ...(secretMethod ? { client_secret: c.client_secret } : {}),
      token_endpoint_auth_method: method,
      grant_types: ['client_credentials', ...(c.token_exchange ? [TOKEN_EXCHANGE] : [])],
      response_types: [],
      redirect_uris: [],
      ...(scope ? { scope } : {}),
      ...extra,
    };
  });
}

function readTtl() {
  const raw = process.env.OIDC_TOKEN_TTL;
  if (raw === undefined || raw === '') return 3600;
  const ttl = Number(raw);
  if (!Number.isSafeInteger(ttl) || ttl <= 0) fail(`OIDC_TOKEN_TTL must be a positive integer of seconds, got ${JSON.stringify(raw)}`);
  return ttl;
}

const clients = readClients();
const tokenTtl = readTtl();

// Scopes the provider recognises. Scopes a client lists are registered here so
// that requesting them is checked against that client's `scope` allow-list
// (and granted), instead of being silently dropped as unknown.
const scopes = new Set(['openid', 'offline_access']);
for (const c of clients) for (const s of (c.scope ?? '').split(' ').filter(Boolean)) scopes.add(s);

// A fresh signing key, so the provider does not fall back to its published
// development keys. (Client-credentials tokens are opaque; the key only backs
// the discovery/JWKS documents.)
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: crypto.randomUUID() };

const { default: Provider } = await import('oidc-provider');

let handler = (req, res) => {
  res.statusCode = 503;
  res.end();
};
const tlsFiles = process.env.OIDC_TLS ? JSON.parse(process.env.OIDC_TLS) : null;
const server = tlsFiles
  ? https.createServer({
    cert: fs.readFileSync(tlsFiles.cert),
    key: fs.readFileSync(tlsFiles.key),
    ca: fs.readFileSync(tlsFiles.ca),
    requestCert: true,
    rejectUnauthorized: false,
  }, (req, res) => handler(req, res))
  : http.createServer((req, res) => handler(req, res));

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const { port } = server.address();
// The test-only routes are also served over plain http on a port of their own, so a test
// reaches them whether or not the provider itself speaks TLS.
const admin = tlsFiles ? http.createServer((req, res) => handler(req, res)) : server;
if (tlsFiles) await new Promise((resolve) => admin.listen(0, '127.0.0.1', resolve));
const adminPort = admin.address().port;
const origin = `${tlsFiles ? 'https' : 'http'}://127.0.0.1:${port}`;
const issuer = origin;

const provider = new Provider(issuer, {
  clients,
  scopes: [...scopes],
  jwks: { keys: [jwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt', ...(tlsFiles ? ['tls_client_auth'] : [])],
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    mTLS: {
      enabled: Boolean(tlsFiles),
      tlsClientAuth: true,
      getCertificate(ctx) {
        const peer = ctx.socket.getPeerCertificate?.();
        if (!peer || !peer.raw) return undefined;
        return `-----BEGIN CERTIFICATE-----\n${peer.raw.toString('base64').match(/.{1,64}/g).join('\n')}\n-----END CERTIFICATE-----`;
      },
      certificateAuthorized(ctx) {
        return ctx.socket.authorized === true;
      },
      certificateSubjectMatches(ctx, property, expected) {
        const peer = ctx.socket.getPeerCertificate?.();
        return property === 'tls_client_auth_subject_dn' && Boolean(peer?.subject) && `CN=${peer.subject.CN}` === expected;
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: [...scopes].join(' '),
        audience: resource,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  ttl: {
    ClientCredentials: tokenTtl,
  },
});

// RFC 8693 token exchange, as the test's authorization server does it: the client is
// authenticated by the provider (any of its methods); a non-empty subject_token is
// exchanged for a client-credentials access token of that client.
provider.registerGrantType(TOKEN_EXCHANGE, async (ctx) => {
  const { subject_token: subject, subject_token_type: subjectType } = ctx.oidc.params;
  if (!subject) {
    ctx.status = 400;
    ctx.body = { error: 'invalid_request', error_description: 'subject_token missing' };
    return;
  }
  const token = new provider.ClientCredentials({ client: ctx.oidc.client, scope: ctx.oidc.params.scope || undefined });
  const value = await token.save();
  ctx.body = {
    access_token: value,
    issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    token_type: 'Bearer',
    expires_in: token.expiration,
    subject_token_type_seen: subjectType,
  };
}, ['subject_token', 'subject_token_type', 'audience', 'resource', 'scope'], ['audience', 'resource']);

// Counting. The token endpoint URL is the one the provider itself builds for its
// "token" route (the same value its discovery document advertises).
const tokenUrl = provider.urlFor('token');
const tokenPath = new URL(tokenUrl).pathname;
const stats = { token_requests: 0, token_successes: 0 };
// How each token request presented its client credentials, as seen on the wire.
// oidc-provider treats client_secret_basic and client_secret_post as
// interchangeable for a client registered with either, so this is the only way
// for a test to tell which one the caller used.
const authMethods = { client_secret_basic: 0, client_secret_post: 0, none: 0 };
const snapshot = () => ({ ...stats, auth_methods: { ...authMethods } });
// Every token request as the provider judged it (see /_test/seen).
const seen = [];
const decodeJwt = (jwt) => {
  try {
    const [h, p] = jwt.split('.');
    return { header: JSON.parse(Buffer.from(h, 'base64url')), payload: JSON.parse(Buffer.from(p, 'base64url')) };
  } catch {
    return null;
  }
};
const list = (v) => (v === undefined ? [] : [].concat(v));

// provider.use() places the middleware ahead of the provider's own error handling,
// so after `await next()` the final status of every request is known.
provider.use(async (ctx, next) => {
  if (ctx.path === '/_test/stats' && ctx.method === 'GET') {
    ctx.status = 200;
    ctx.body = snapshot();
    return;
  }
  if (ctx.path === '/_test/seen' && ctx.method === 'GET') {
    ctx.status = 200;
    ctx.body = seen;
    return;
  }
  if (ctx.path === '/_test/reset' && ctx.method === 'POST') {
    stats.token_requests = 0;
    stats.token_successes = 0;
    for (const k of Object.keys(authMethods)) authMethods[k] = 0;
    ctx.status = 200;
    ctx.body = snapshot();
    return;
  }
  if (ctx.path !== tokenPath) {
    await next();
    return;
  }
  stats.token_requests += 1;
  try {
    await next();
  } finally {
    const basic = /^basic /i.test(ctx.get('authorization'));
    let post = false;
    try {
      post = typeof ctx.oidc?.body?.client_secret === 'string';
    } catch {
      // no parsed body (the request failed before the provider read it)
    }
    if (basic) authMethods.client_secret_basic += 1;
    if (post) authMethods.client_secret_post += 1;
    if (!basic && !post) authMethods.none += 1;
    if (ctx.status === 200 && ctx.body && typeof ctx.body === 'object' && ctx.body.access_token) {
      stats.token_successes += 1;
    }
    let body = {};
    try {
      body = ctx.oidc?.body ?? {};
    } catch {
      // no parsed body
    }
    const answer = ctx.body && typeof ctx.body === 'object' ? ctx.body : {};
    seen.push({
      status: ctx.status,
      error: answer.error ?? null,
      error_description: answer.error_description ?? null,
      client_id: ctx.oidc?.client?.clientId ?? null,
      method: ctx.oidc?.client?.clientAuthMethod ?? null,
      grant_type: body.grant_type ?? null,
      assertion: body.client_assertion ? decodeJwt(body.client_assertion) : null,
      resource: list(body.resource),
      audience: list(body.audience),
      subject_token: body.subject_token ?? null,
      subject_token_type: body.subject_token_type ?? null,
      access_token_claims: typeof answer.access_token === 'string' ? decodeJwt(answer.access_token)?.payload ?? null : null,
    });
  }
});

provider.on('grant.error', (ctx, err) => {
  process.stderr.write(`oidc test server: token request failed: ${err.error ?? err.name}: ${err.error_description ?? err.message}\n`);
});
provider.on('server_error', (ctx, err) => {
  process.stderr.write(`oidc test server: server_error: ${err.stack ?? err}\n`);
});

// Static clients are only validated when first looked up; do it now, so a bad
// OIDC_CLIENTS entry fails the start instead of the first token request.
for (const { client_id: id } of clients) {
  try {
    // eslint-disable-next-line no-await-in-loop
    if (!await provider.Client.find(id)) fail(`client ${JSON.stringify(id)} was not registered`);
  } catch (err) {
    fail(`client ${JSON.stringify(id)} rejected by oidc-provider: ${err.error ?? err.name}: ${err.error_description ?? err.message}`);
  }
}

handler = provider.callback();

let exiting = false;
function shutdown(reason) {
  if (exiting) return;
  exiting = true;
  process.stderr.write(`oidc test server: exiting (${reason})\n`);
  server.close();
  if (admin !== server) admin.close();
  server.closeAllConnections?.();
  process.exit(0);
}
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => shutdown(sig));
process.stdin.on('end', () => shutdown('stdin closed'));
process.stdin.on('close', () => shutdown('stdin closed'));
process.stdin.on('error', () => shutdown('stdin error'));
process.stdin.resume();

process.stdout.write(`${JSON.stringify({
  ready: true,
  port,
  admin_port: adminPort,
  issuer,
  token_url: tokenUrl,
  stats_url: `${origin}/_test/stats`,
  reset_url: `${origin}/_test/reset`,
})}\n`);
