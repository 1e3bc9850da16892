//! The words a person reads for the codes of a change (status, risk, action), in Chinese and
//! English: e-mails and calendar entries show these, never the codes.

/// (中文, English) for a status; an unknown code is shown as it is.
pub fn status(code: &str) -> (&str, &str) {
    match code {
        "submitted" => ("已提交待审批", "submitted"),
        "approved" => ("已批准", "approved"),
        "rejected" => ("已驳回", "rejected"),
        "in_progress" => ("实施中", "in progress"),
        "completed" => ("已完成", "completed"),
        "cancelled" => ("已取消", "cancelled"),
        "expired" => ("已过期", "expired"),
        other => (other, other),
    }
}

/// (中文, English) for a risk level.
pub fn risk(code: &str) -> (&str, &str) {
    match code {
        "low" => ("低", "low"),
        "medium" => ("中", "medium"),
        "high" => ("高", "high"),
        other => (other, other),
    }
}

/// (中文, English) for the outcome of a completed change.
pub fn outcome(code: &str) -> (&str, &str) {
    match code {
        "succeeded" => ("成功", "succeeded"),
        "failed" => ("失败", "failed"),
        "rolled_back" => ("已回退", "rolled back"),
        other => (other, other),
    }
}

/// (中文, English) for a category's action (Art. 19: connect, remove, install, replace
/// equipment; insert, update, delete data; schema changes).
pub fn action(code: &str) -> (&str, &str) {
    match code {
        "connect" => ("连接设备", "connect equipment"),
        "remove" => ("拆除设备", "remove equipment"),
        "install" => ("安装", "install"),
        "replace" => ("更换设备", "replace equipment"),
        "insert" => ("新增数据", "insert data"),
        "update" => ("修改数据", "update data"),
        "delete" => ("删除数据", "delete data"),
        "schema" => ("修改表结构", "change the schema"),
        "read" => ("查询数据", "read data"),
        other => (other, other),
    }
}

/// Both languages, as the calendar entry (read by everyone) shows them.
pub fn both((zh, en): (&str, &str)) -> String {
    if zh == en {
        zh.to_string()
    } else {
        format!("{zh} / {en}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_words() {
        for s in crate::changes::rules::Status::ALL {
            let (zh, en) = status(s.as_str());
            assert_ne!(zh, s.as_str(), "{s:?}");
            assert!(!en.contains('_'), "{s:?}");
        }
        assert_eq!(both(risk("medium")), "中 / medium");
        assert_eq!(risk("odd"), ("odd", "odd"));
        for o in [
            crate::changes::Outcome::Succeeded,
            crate::changes::Outcome::Failed,
            crate::changes::Outcome::RolledBack,
        ] {
            let (zh, en) = outcome(o.as_str());
            assert_ne!(zh, o.as_str());
            assert!(!en.contains('_'));
        }
    }
}
