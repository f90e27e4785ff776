#!/usr/bin/env bash
# Lints the AWS deployment offline: cfn-lint and `sam validate --lint` on infra/template.yaml and
# infra/template-jwt.yaml.
#
#   bash scripts/check-infra.sh
#
# The SAM CLI and cfn-lint live in their own venv (installing the SAM CLI next to other AWS tools downgrades
# boto3): ${DSPY_STORAGE_CACHE:-$HOME/.cache/dspy-storage}/sam-venv, created on first use. No AWS
# account or credentials are needed (region us-east-1, telemetry off). Exits non-zero on any error.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The AWS_IAM stack and the same stack with the JWT authorizer (derived by functions/tests/infra.rs).
TEMPLATES=(infra/template.yaml infra/template-jwt.yaml)
CACHE="${DSPY_STORAGE_CACHE:-$HOME/.cache/dspy-storage}"
VENV="$CACHE/sam-venv"

# Installs into the shared cache are serialised (two test runs at once on one machine).
mkdir -p "$CACHE"
exec 9>"$CACHE/.install.lock"
flock -w 1800 9
if [[ ! -x "$VENV/bin/sam" || ! -x "$VENV/bin/cfn-lint" ]]; then
    echo "== installing aws-sam-cli and cfn-lint into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check aws-sam-cli cfn-lint
fi
exec 9>&-
echo "== $("$VENV/bin/sam" --version), cfn-lint $("$VENV/bin/cfn-lint" --version | awk '{print $NF}')"

export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 SAM_CLI_TELEMETRY=0
# Never pick up a user's profile or credentials: both checks are offline.
unset AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN

for TEMPLATE in "${TEMPLATES[@]}"; do
    echo "== cfn-lint $TEMPLATE"
    "$VENV/bin/cfn-lint" "$TEMPLATE"

    echo "== sam validate --lint -t $TEMPLATE"
    "$VENV/bin/sam" validate --lint -t "$TEMPLATE"
done

# What deploys: each template translated offline, every route on its authorizer.
"$VENV/bin/python" scripts/check-authorizers.py infra/template.yaml AWS_IAM
"$VENV/bin/python" scripts/check-authorizers.py infra/template-jwt.yaml JwtAuthorizer

echo "== infra checks passed"
