//! Operator requests: accounts (from the command line; one name, one account), networks (create, list) and
//! enrollment tokens (admin token): issue with limits, list, revoke.

use super::{alloc, authenticate, check_name, issue_token, prefixes};
use crate::error::{code, ApiError};
use crate::model::{Account, Network, TokenKind, TokenLimits, TokenRecord};
use crate::store::{ReadTx, WriteTx};
use crate::token::{self, Presented};
use sdwand::vocab::wire::{
    AccountCreated, CreateEnrollmentTokenRequest, CreateNetworkRequest, EnrollmentTokenInfo, EnrollmentTokenView,
    EnrollmentTokensResponse, NetworkView, NetworksResponse,
};

/// Creates an account and its admin token (`sdwan-registry init-account`; there is no HTTP route for it).
/// A name another account has is refused (409 `account_name_taken`), that account untouched.
pub fn create_account(tx: &mut dyn WriteTx, name: &str, now_ms: u64) -> Result<AccountCreated, ApiError> {
    check_name("account name", name)?;
    if let Some(existing) = tx.account_by_name(name)? {
        return Err(ApiError::conflict(
            code::ACCOUNT_NAME_TAKEN,
            format!(
                "an account named {name:?} exists already (id {}); its admin token is unchanged. Choose \
                 another name",
                existing.id
            ),
        ));
    }
    let account = Account {
        id: token::new_id()?,
        name: name.to_owned(),
        created_at_ms: now_ms,
    };
    let admin = issue_token(tx, TokenKind::Admin)?;
    tx.put_account(&account)?;
    tx.after_commit(Box::new({
        let (account, token) = (account.clone(), admin.key_id.clone());
        move || tracing::info!(account = %account.id, name = %account.name, %token, "account created")
    }));
    tx.put_token(&TokenRecord::new(
        admin.key_id,
        TokenKind::Admin,
        admin.secret_hash,
        account.id.clone(),
        now_ms,
    ))?;
    Ok(AccountCreated {
        account_id: account.id,
        name: account.name,
        admin_token: admin.text,
        admin_token_file: None,
    })
}

/// `POST /v1/networks`: creates a network in the admin's account.
pub fn create_network(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    req: &CreateNetworkRequest,
    now_ms: u64,
) -> Result<NetworkView, ApiError> {
    let admin = authenticate(tx, presented, &[TokenKind::Admin])?;
    check_name("network name", &req.name)?;
    alloc::check_prefixes(req.overlay_prefix, req.vip_pool).map_err(ApiError::bad_request)?;
    prefixes::check_network(req).map_err(ApiError::bad_request)?;
    let network = Network {
        id: token::new_id()?,
        account_id: admin.account_id,
        name: req.name.clone(),
        overlay_prefix: req.overlay_prefix,
        vip_pool: req.vip_pool,
        revision: 1,
        next_peer_offset: 1,
        next_vip_offset: 1,
        overlay_prefix_v4: req.overlay_prefix_v4,
        pod_pools: req.pod_pools.clone(),
        site_ranges: req.site_ranges.clone(),
        created_at_ms: now_ms,
    };
    tx.put_network(&network)?;
    tx.after_commit(Box::new({
        let network = network.clone();
        move || {
            tracing::info!(
                account = %network.account_id, network = %network.id, name = %network.name,
                overlay = %network.overlay_prefix, vip_pool = %network.vip_pool,
                overlay_v4 = ?network.overlay_prefix_v4, pod_pools = ?network.pod_pools,
                site_ranges = ?network.site_ranges, "network created"
            );
        }
    }));
    Ok(view(&network))
}

/// `GET /v1/networks`: every network of the admin's account, oldest first (other accounts' are invisible).
pub fn list_networks(tx: &mut dyn ReadTx, presented: &Presented) -> Result<NetworksResponse, ApiError> {
    let admin = authenticate(tx, presented, &[TokenKind::Admin])?;
    let networks = tx.networks(&admin.account_id)?;
    Ok(NetworksResponse {
        networks: networks.iter().map(view).collect(),
    })
}

/// `POST /v1/networks/{id}/enrollment-tokens`: issues an enrollment token for a network of the admin's
/// account, with the limits `req` asks for (none: a token without limits).
pub fn create_enrollment_token(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    network_id: &str,
    req: &CreateEnrollmentTokenRequest,
    now_ms: u64,
) -> Result<EnrollmentTokenView, ApiError> {
    let admin = authenticate(tx, presented, &[TokenKind::Admin])?;
    let network = tx
        .network(network_id)?
        .filter(|n| n.account_id == admin.account_id)
        .ok_or_else(|| ApiError::not_found(code::NETWORK_NOT_FOUND, format!("no network {network_id:?}")))?;
    let limits = limits(req, now_ms).map_err(ApiError::bad_request)?;
    let issued = issue_token(tx, TokenKind::Enrollment)?;
    let record = TokenRecord {
        network_id: Some(network.id),
        limits,
        ..TokenRecord::new(
            issued.key_id,
            TokenKind::Enrollment,
            issued.secret_hash,
            network.account_id,
            now_ms,
        )
    };
    tx.put_token(&record)?;
    tx.after_commit(Box::new({
        let record = record.clone();
        move || {
            tracing::info!(
                account = %record.account_id, token = %record.key_id, network = ?record.network_id,
                expires_at_ms = ?record.limits.expires_at_ms, max_uses = ?record.limits.max_uses,
                roles = ?record.limits.roles, "enrollment token issued"
            );
        }
    }));
    Ok(EnrollmentTokenView {
        token: issued.text,
        info: info(&record),
    })
}

/// The limits a token request asks for, checked: one expiry at most, in the future; at least one use.
fn limits(req: &CreateEnrollmentTokenRequest, now_ms: u64) -> Result<TokenLimits, String> {
    let expires_at_ms = match (req.expires_in_s, req.expires_at_ms) {
        (Some(_), Some(_)) => return Err("give expires_in_s or expires_at_ms, not both".to_owned()),
        (Some(0), None) => return Err("expires_in_s is 0: the token would be expired at once".to_owned()),
        (Some(s), None) => Some(now_ms.saturating_add(s.saturating_mul(1000))),
        (None, Some(at)) if at <= now_ms => {
            return Err(format!("expires_at_ms {at} is not in the future (now is {now_ms})"))
        }
        (None, at) => at,
    };
    if req.max_uses == Some(0) {
        return Err("max_uses is 0: the token could enroll nobody".to_owned());
    }
    let roles = req.roles.clone().map(|mut r| {
        r.sort();
        r.dedup();
        r
    });
    Ok(TokenLimits {
        expires_at_ms,
        max_uses: req.max_uses,
        uses: 0,
        roles,
        revoked_at_ms: None,
    })
}

/// `GET /v1/enrollment-tokens`: every enrollment token of the admin's account, without secrets.
pub fn list_enrollment_tokens(
    tx: &mut dyn ReadTx,
    presented: &Presented,
) -> Result<EnrollmentTokensResponse, ApiError> {
    let admin = authenticate(tx, presented, &[TokenKind::Admin])?;
    let tokens = tx.tokens(&admin.account_id, TokenKind::Enrollment)?;
    Ok(EnrollmentTokensResponse {
        tokens: tokens.iter().map(info).collect(),
    })
}

/// `DELETE /v1/enrollment-tokens/{id}`: revokes an enrollment token of the admin's account; from then on
/// it answers 401 `token_revoked`. Peers it enrolled keep their own tokens. Revoking a revoked token keeps
/// its first revocation time.
pub fn revoke_enrollment_token(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    token_id: &str,
    now_ms: u64,
) -> Result<EnrollmentTokenInfo, ApiError> {
    let admin = authenticate(tx, presented, &[TokenKind::Admin])?;
    let mut record = tx
        .token(token_id)?
        .filter(|t| t.kind == TokenKind::Enrollment && t.account_id == admin.account_id)
        .ok_or_else(|| ApiError::not_found(code::TOKEN_NOT_FOUND, format!("no enrollment token {token_id:?}")))?;
    if record.limits.revoked_at_ms.is_none() {
        record.limits.revoked_at_ms = Some(now_ms);
        tx.update_token(&record)?;
        tx.after_commit(Box::new({
            let record = record.clone();
            move || {
                tracing::info!(
                    account = %record.account_id, token = %record.key_id, network = ?record.network_id,
                    "enrollment token revoked"
                );
            }
        }));
    }
    Ok(info(&record))
}

fn info(t: &TokenRecord) -> EnrollmentTokenInfo {
    EnrollmentTokenInfo {
        id: t.key_id.clone(),
        network_id: t.network_id.clone().unwrap_or_default(),
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.limits.expires_at_ms,
        max_uses: t.limits.max_uses,
        uses: t.limits.uses,
        roles: t.limits.roles.clone(),
        revoked_at_ms: t.limits.revoked_at_ms,
    }
}

fn view(n: &Network) -> NetworkView {
    NetworkView {
        id: n.id.clone(),
        account_id: n.account_id.clone(),
        name: n.name.clone(),
        overlay_prefix: n.overlay_prefix,
        vip_pool: n.vip_pool,
        overlay_prefix_v4: n.overlay_prefix_v4,
        pod_pools: n.pod_pools.clone(),
        site_ranges: n.site_ranges.clone(),
        revision: n.revision,
    }
}
