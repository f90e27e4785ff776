"""Translates a SAM template offline (samtranslator, from the SAM CLI's venv) and checks that
every route of the HTTP API carries the expected authorizer.

    python check-authorizers.py infra/template.yaml AWS_IAM
    python check-authorizers.py infra/template-jwt.yaml JwtAuthorizer
"""

import json
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    """The template names no managed policies; nothing to look up (no AWS call)."""

    def load(self):
        return {}


def main(path: str, expected: str) -> int:
    with open(path, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    # The translator wants S3 code locations; `sam build` puts them there.
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://bucket/code.zip"
    parameters = {"JwtIssuer": "https://issuer.example", "JwtAudience": "dspy-storage"}
    out = transform(template, parameters, NoManagedPolicies())
    body = out["Resources"]["HttpApi"]["Properties"]["Body"]
    routes = [
        (method.upper(), route, op.get("security"))
        for route, methods in body["paths"].items()
        for method, op in methods.items()
    ]
    wrong = [(m, r, s) for m, r, s in routes if s != [{expected: []}]]
    for m, r, s in wrong:
        print(f"{path}: {m} {r} has security {json.dumps(s)}, not {expected}")
    if not routes or wrong:
        return 1
    print(f"{path}: all {len(routes)} routes on {expected}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
