// A real OpenID Connect provider for mailbot's console tests (node-oidc-provider), set up
// like ProConnect: authorization code flow with PKCE, userinfo as a signed JWT (RS256),
// acr "eidas1", RP-initiated logout (end_session_endpoint). Loopback only.
//
//   node provider.mjs settings.json
//
// settings.json: { "issuer": "http://127.0.0.1:PORT", "port": PORT,
//   "client": { "client_id", "client_secret", "redirect_uris": [...],
//               "post_logout_redirect_uris": [...] },
//   "accounts": { "<login>": { "password", "sub", "email", "given_name", "usual_name" } },
//   "unsigned_userinfo": false }
// Prints "ready <issuer>" on stdout once it accepts connections.

import { generateKeyPairSync, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { parse as parseQuery } from "node:querystring";

import Provider from "oidc-provider";

const settings = JSON.parse(readFileSync(process.argv[2], "utf8"));
const accounts = settings.accounts;
const ACR = "eidas1";

const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), kid: "test-rs256", alg: "RS256", use: "sig" };

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8"><title>${escape(title)}</title></head>
<body><main><h1>${escape(title)}</h1>${body}</main></body></html>`;

function loginPage(uid, error) {
  return page("Fournisseur d'identité de test", `
    ${error ? `<p id="op-error" role="alert">${escape(error)}</p>` : ""}
    <form method="post" action="/interaction/${escape(uid)}/login">
      <label for="op-email">Adresse électronique</label>
      <input id="op-email" name="email" type="email" autocomplete="username" required>
      <label for="op-password">Mot de passe</label>
      <input id="op-password" name="password" type="password" autocomplete="current-password" required>
      <button id="op-submit" type="submit">Se connecter</button>
    </form>`);
}

async function readForm(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  return parseQuery(Buffer.concat(chunks).toString("utf8"));
}

const provider = new Provider(settings.issuer, {
  clients: [
    {
      ...settings.client,
      response_types: ["code"],
      grant_types: ["authorization_code"],
      token_endpoint_auth_method: "client_secret_post",
      id_token_signed_response_alg: "RS256",
      // "unsigned_userinfo": true answers plain JSON, which the console must refuse.
      ...(settings.unsigned_userinfo ? {} : { userinfo_signed_response_alg: "RS256" }),
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString("hex")] },
  scopes: ["openid", "email", "given_name", "usual_name"],
  claims: {
    acr: null,
    openid: ["sub"],
    email: ["email"],
    given_name: ["given_name"],
    usual_name: ["usual_name"],
  },
  acrValues: [ACR],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    jwtUserinfo: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // ProConnect logs out without asking: the form submits itself.
      logoutSource: async (ctx, form) => {
        ctx.body = page("Déconnexion", `${form}
          <input type="hidden" form="op.logoutForm" name="logout" value="yes">
          <button id="op-logout" type="submit" form="op.logoutForm">Se déconnecter</button>
          <script>document.getElementById("op.logoutForm").submit();</script>`);
      },
      postLogoutSuccessSource: async (ctx) => {
        ctx.body = page("Déconnecté", "<p>Vous êtes déconnecté.</p>");
      },
    },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // First-party client: consent is implied, as with ProConnect.
  async loadExistingGrant(ctx) {
    const { Grant } = ctx.oidc.provider;
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const existing = await Grant.find(grantId);
      if (existing) return existing;
    }
    const grant = new Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(" "));
    await grant.save();
    return grant;
  },
  async findAccount(ctx, sub) {
    const entry = Object.values(accounts).find((account) => account.sub === sub);
    if (!entry) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, email: entry.email, given_name: entry.given_name, usual_name: entry.usual_name };
      },
    };
  },
  async renderError(ctx, out) {
    ctx.type = "html";
    ctx.body = page("Erreur du fournisseur d'identité",
      `<pre id="op-error">${escape(JSON.stringify(out))}</pre>`);
  },
});

provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!match) return next();
  const [, uid, login] = match;
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.uid !== uid || details.prompt.name !== "login") ctx.throw(400, "unexpected interaction");
  if (!login) {
    ctx.type = "html";
    ctx.body = loginPage(uid);
    return undefined;
  }
  const form = await readForm(ctx);
  const entry = Object.values(accounts).find((a) => a.email === form.email && a.password === form.password);
  if (!entry) {
    ctx.type = "html";
    ctx.body = loginPage(uid, "Adresse ou mot de passe incorrect.");
    return undefined;
  }
  await provider.interactionFinished(ctx.req, ctx.res,
    { login: { accountId: entry.sub, acr: ACR } }, { mergeWithLastSubmission: false });
  return undefined;
});

const server = provider.listen(settings.port, "127.0.0.1", () => {
  process.stdout.write(`ready ${settings.issuer}\n`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
