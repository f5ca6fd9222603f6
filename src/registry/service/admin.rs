//! Operator requests: accounts (from the command line), networks and enrollment tokens (admin token).

use super::{alloc, authenticate, check_name};
use crate::registry::error::{code, ApiError};
use crate::registry::model::{Account, Network, TokenKind, TokenRecord};
use crate::registry::store::WriteTx;
use crate::registry::token::{self, Presented};
use crate::registry::wire::{AccountCreated, CreateNetworkRequest, EnrollmentTokenView, NetworkView};

/// Creates an account and its admin token (`sdwan-registry init-account`; there is no HTTP route for it).
pub fn create_account(tx: &mut dyn WriteTx, name: &str, now_ms: u64) -> Result<AccountCreated, ApiError> {
    check_name("account name", name)?;
    let account = Account {
        id: token::new_id()?,
        name: name.to_owned(),
        created_at_ms: now_ms,
    };
    let admin = token::issue(TokenKind::Admin)?;
    tx.put_account(&account)?;
    tx.put_token(&TokenRecord {
        key_id: admin.key_id,
        kind: TokenKind::Admin,
        secret_hash: admin.secret_hash,
        account_id: account.id.clone(),
        network_id: None,
        peer_id: None,
        created_at_ms: now_ms,
    })?;
    Ok(AccountCreated {
        account_id: account.id,
        name: account.name,
        admin_token: admin.text,
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
    let network = Network {
        id: token::new_id()?,
        account_id: admin.account_id,
        name: req.name.clone(),
        overlay_prefix: req.overlay_prefix,
        vip_pool: req.vip_pool,
        revision: 1,
        next_peer_offset: 1,
        next_vip_offset: 1,
        created_at_ms: now_ms,
    };
    tx.put_network(&network)?;
    Ok(view(&network))
}

/// `POST /v1/networks/{id}/enrollment-tokens`: issues an enrollment token for a network of the admin's
/// account.
pub fn create_enrollment_token(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    network_id: &str,
    now_ms: u64,
) -> Result<EnrollmentTokenView, ApiError> {
    let admin = authenticate(tx, presented, &[TokenKind::Admin])?;
    let network = tx
        .network(network_id)?
        .filter(|n| n.account_id == admin.account_id)
        .ok_or_else(|| ApiError::not_found(code::NETWORK_NOT_FOUND, format!("no network {network_id:?}")))?;
    let issued = token::issue(TokenKind::Enrollment)?;
    tx.put_token(&TokenRecord {
        key_id: issued.key_id,
        kind: TokenKind::Enrollment,
        secret_hash: issued.secret_hash,
        account_id: network.account_id,
        network_id: Some(network.id.clone()),
        peer_id: None,
        created_at_ms: now_ms,
    })?;
    Ok(EnrollmentTokenView {
        network_id: network.id,
        token: issued.text,
    })
}

fn view(n: &Network) -> NetworkView {
    NetworkView {
        id: n.id.clone(),
        account_id: n.account_id.clone(),
        name: n.name.clone(),
        overlay_prefix: n.overlay_prefix,
        vip_pool: n.vip_pool,
        revision: n.revision,
    }
}
