#!/bin/sh
# 部署前向 changeguard 准入闸门申请准入；无已批准且正在实施的变更则拒绝部署。
# A deploy step that asks the changeguard admission gate first and refuses to deploy without
# an approved change in progress inside its window.
#
#   CG_URL       changeguard's base URL, e.g. https://changeguard.bank.example
#   CG_TOKEN     the pipeline's service token (cgt_…), from the CI's secret store
#   CG_SYSTEM    the system's key in the register, e.g. core-banking
#   CG_CATEGORY  optional: only a change of this category admits (e.g. software_upgrade)
#   CG_ADMISSION_FILE  where to write the signed admission (default ./admission.jws), for the
#                steps after this one (e.g. examples/gate/db-wrapper.sh on the database host)
#
# Exit 0: admitted (the admission is in CG_ADMISSION_FILE). Exit 1: refused, with the reason.
# Needs only sh, curl and sed.
set -eu
: "${CG_URL:?CG_URL is not set}" "${CG_TOKEN:?CG_TOKEN is not set}" "${CG_SYSTEM:?CG_SYSTEM is not set}"
out="${CG_ADMISSION_FILE:-./admission.jws}"
body="{\"system\":\"${CG_SYSTEM}\""
if [ -n "${CG_CATEGORY:-}" ]; then
  body="${body},\"category\":\"${CG_CATEGORY}\""
fi
body="${body}}"
answer=$(mktemp)
trap 'rm -f "$answer"' EXIT
status=$(curl -sS -o "$answer" -w '%{http_code}' -X POST "${CG_URL%/}/api/v1/gate/check" \
  -H "Authorization: Bearer ${CG_TOKEN}" -H 'Content-Type: application/json' --data "$body") || {
  echo "changeguard: 准入闸门不可达，拒绝部署 / the admission gate is unreachable: not deploying" >&2
  exit 1
}
if [ "$status" != "200" ]; then
  detail=$(sed -n 's/.*"detail":"\([^"]*\)".*/\1/p' "$answer")
  code=$(sed -n 's/.*"code":"\([^"]*\)".*/\1/p' "$answer")
  echo "changeguard: 拒绝部署 / not deploying (${status} ${code}): ${detail}" >&2
  exit 1
fi
sed -n 's/.*"admission":"\([^"]*\)".*/\1/p' "$answer" > "$out"
change=$(sed -n 's/.*"change_id":\([0-9]*\).*/\1/p' "$answer")
echo "changeguard: 准入 / admitted under change #${change}; admission in ${out}"
