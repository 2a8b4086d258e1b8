// Herald gray releases behind nginx (deploy/nginx/canary.conf): the user a request is for.
//
// $herald_user is the `sub` claim of the JWT the request carries: the Authorization
// bearer token, or the `token` query parameter (the stream token of a native
// EventSource, which is a JWT with the same `sub`). It is decoded WITHOUT verifying the
// signature: it only chooses a pool, and the node verifies the token as always. A forged
// `sub` can at worst pick the other pool for a request that the node then refuses.
// No token, or not a JWT: the empty string (canary.conf sends those to the stable pool).

function bearer(header) {
    if (!header) {
        return '';
    }
    var found = /^Bearer\s+(\S+)\s*$/i.exec(header);
    return found ? found[1] : '';
}

function user(r) {
    var token = bearer(r.headersIn.Authorization) || r.args.token || '';
    var parts = token.split('.');
    if (parts.length !== 3 || parts[1].length > 8192) {
        return '';
    }
    try {
        var claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
        return claims && typeof claims.sub === 'string' ? claims.sub : '';
    } catch (e) {
        return '';
    }
}

export default { user };
