//! The words a person reads for the vault's codes (a credential's kind, what the access log
//! records, why a reveal was refused), in Chinese and English: pages show these, never codes.

/// (中文, English) for a credential's kind.
pub fn kind(code: &str) -> (&str, &str) {
    match code {
        "password" => ("口令", "password"),
        "key" => ("密钥", "key"),
        "token" => ("令牌", "token"),
        other => (other, other),
    }
}

/// (中文, English) for an audit action about a credential.
pub fn action(code: &str) -> (&str, &str) {
    match code {
        "credential.create" => ("登记凭据", "stored"),
        "credential.reveal" => ("取用", "revealed"),
        "credential.rotate" => ("轮换", "rotated"),
        "credential.rotate_begin" => ("开始自动轮换", "rotation begun by changeguard"),
        "credential.grant" => ("授予长期访问", "standing access granted"),
        "credential.grant_approve" => ("批准长期访问", "standing access approved"),
        "credential.grant_revoke" => ("撤销长期访问", "standing access revoked"),
        other => (other, other),
    }
}

/// (中文, English) for the code of a refused access.
pub fn refusal(code: &str) -> (&str, &str) {
    match code {
        "no_change_window" => ("无进行中的变更", "no change in progress"),
        "change_not_for_system" => ("变更不涉及该系统", "the change does not touch its system"),
        "change_not_in_progress" => ("变更不在实施中", "the change is not in progress"),
        "change_overdue" => (
            "变更已超过计划结束时间",
            "the change is past its planned end",
        ),
        "not_assignee" => ("不是变更实施人", "not the change's assignee"),
        "totp_required" => ("未填写动态口令", "no one-time code given"),
        "totp_invalid" => ("动态口令不正确", "wrong one-time code"),
        "totp_replayed" => ("动态口令已用过", "one-time code used before"),
        "totp_not_enrolled" => ("未绑定二次验证", "no second factor enrolled"),
        "too_many_requests" => ("错误次数过多", "too many wrong codes"),
        "not_rotator" => ("无权轮换", "may not rotate"),
        "self_grant" => ("不能授权给自己", "may not grant themselves"),
        "self_approval" => ("不能自己批准", "may not approve their own"),
        "forbidden" => ("无权限", "not permitted"),
        "credential_undecryptable" => ("凭据无法解密", "the secret does not decrypt"),
        other => (other, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reveal_refusals_have_words() {
        for code in [
            "no_change_window",
            "change_not_for_system",
            "change_not_in_progress",
            "change_overdue",
            "not_assignee",
            "totp_required",
            "totp_invalid",
            "totp_replayed",
            "totp_not_enrolled",
        ] {
            let (zh, en) = refusal(code);
            assert_ne!(zh, code);
            assert_ne!(en, code);
        }
        assert_eq!(kind("password"), ("口令", "password"));
        assert_eq!(action("unknown.thing"), ("unknown.thing", "unknown.thing"));
    }
}
