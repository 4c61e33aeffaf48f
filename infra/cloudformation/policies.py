"""The IAM JSON files in infra/ come from the CloudFormation template, so the
two cannot drift:

    python infra/cloudformation/policies.py --write   # regenerate them
    python infra/cloudformation/policies.py --check   # fail if they differ (make lint)

The template's policy documents are evaluated with placeholders for what a
deployment fills in: REGION, ACCOUNT, AUDITED_TABLE (one table; repeat its two
resources per audited table), STACK (the stack name: the task role is
STACK-task), TRAIL_BUCKET/TRAIL_PREFIX (CloudTrail attribution) and
DIGEST_KEY_ARN (a KMS digest key); the table names are the template's
defaults. daemon-policy.json is the template's DaemonPolicy (the task role:
`run` and `snapshot`); init-policy.json is what `ddb-audit init` needs on the
daemon's own tables (CreateTable; indexes, deletion protection, point-in-time
recovery and TTL), for deployments that run `init` instead of using the
stack, with credentials other than the daemon's.

Runs with the infra linters' virtualenv (cfn-lint reads the YAML).
"""
import json
import re
import sys
from pathlib import Path

from cfnlint.decode import decode_str

HERE = Path(__file__).resolve().parent
INFRA = HERE.parent
TEMPLATE = HERE / "ddb-audit.yaml"
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "REGION",
    "AWS::AccountId": "ACCOUNT",
    "AWS::StackName": "STACK",
}
NO_VALUE = object()


class Evaluator:
    def __init__(self, template):
        self.t = template
        self.params = {k: v.get("Default") for k, v in template["Parameters"].items()}
        self.params["AuditedTables"] = ["AUDITED_TABLE"]
        # The generated files show the CloudTrail statements, to fill in or drop.
        self.params["CloudTrailBucket"] = "TRAIL_BUCKET"
        self.params["CloudTrailPrefix"] = "TRAIL_PREFIX"
        # ... and the KMS statements, for a digest key ([proof] kms_key_id).
        self.params["DigestKmsKeyArn"] = "DIGEST_KEY_ARN"

    def ref(self, name):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.params:
            return self.params[name]
        res = self.t["Resources"][name]
        if res["Type"] == "AWS::DynamoDB::Table":
            return self.ev(res["Properties"]["TableName"])
        raise ValueError(f"no placeholder for Ref {name}")

    def get_att(self, name, attr):
        res = self.t["Resources"][name]
        if res["Type"] == "AWS::DynamoDB::Table" and attr == "Arn":
            return f"arn:aws:dynamodb:REGION:ACCOUNT:table/{self.ref(name)}"
        raise ValueError(f"no placeholder for GetAtt {name}.{attr}")

    def condition(self, name):
        return bool(self.ev(self.t["Conditions"][name]))

    def sub(self, text, variables):
        def one(m):
            key = m.group(1)
            if key in variables:
                return str(variables[key])
            if "." in key:
                return self.get_att(*key.split(".", 1))
            return str(self.ref(key))

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def ev(self, v):
        if isinstance(v, list):
            out = [self.ev(x) for x in v]
            return [x for x in out if x is not NO_VALUE]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (fn, arg), = v.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                parts = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(*parts)
            if fn == "Fn::Sub":
                if isinstance(arg, str):
                    return self.sub(arg, {})
                return self.sub(arg[0], {k: self.ev(x) for k, x in arg[1].items()})
            if fn == "Fn::Join":
                return arg[0].join(str(x) for x in self.ev(arg[1]))
            if fn == "Fn::Split":
                return self.ev(arg[1]).split(arg[0])
            if fn == "Fn::Select":
                return self.ev(arg[1])[int(self.ev(arg[0]))]
            if fn == "Fn::If":
                return self.ev(arg[1] if self.condition(arg[0]) else arg[2])
            if fn == "Fn::Equals":
                a, b = self.ev(arg)
                return a == b
            if fn == "Fn::Not":
                return not self.ev(arg[0])
            if fn == "Condition":
                return self.condition(arg)
        return {k: self.ev(x) for k, x in v.items()}


def generated():
    template, problems = decode_str(TEMPLATE.read_text())
    if template is None:
        raise SystemExit(f"cannot read {TEMPLATE}: {problems}")
    e = Evaluator(template)
    res = template["Resources"]
    daemon = e.ev(res["DaemonPolicy"]["Properties"]["PolicyDocument"])
    own = [e.get_att(t, "Arn") for t in ("StreamsTable", "ShardsTable", "AuditTable")]
    audit = e.get_att("AuditTable", "Arn")
    # `ddb-audit init`, for deployments without the stack: run once (and
    # again when an upgrade adds an index) with credentials other than the
    # daemon's. It creates the three tables, adds the read side's indexes to
    # an audit table that lacks them, and turns on deletion protection
    # (UpdateTable), point-in-time recovery and TTL (drained shard rows;
    # entries under `[retention]`). It never reads or writes an item, and
    # denies itself every change to an entry. The daemon's own policy denies
    # it UpdateTable and UpdateTimeToLive on the audit table, which is why
    # this is a policy of its own (see DaemonPolicy in the template).
    init = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "InitCreatesAndProtectsOwnTables",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:CreateTable",
                    "dynamodb:DescribeTable",
                    "dynamodb:UpdateTable",
                    "dynamodb:UpdateContinuousBackups",
                    "dynamodb:DescribeTimeToLive",
                    "dynamodb:UpdateTimeToLive",
                ],
                "Resource": own,
            },
            {
                "Sid": "AuditEntriesNeverChange",
                "Effect": "Deny",
                "Action": [
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:BatchWriteItem",
                    "dynamodb:PartiQLInsert",
                    "dynamodb:PartiQLUpdate",
                    "dynamodb:PartiQLDelete",
                    "dynamodb:DeleteTable",
                    "dynamodb:RestoreTableFromBackup",
                    "dynamodb:ImportTable",
                ],
                "Resource": audit,
            },
        ],
    }
    return {
        "daemon-policy.json": daemon,
        "init-policy.json": init,
        "auditor-policy.json": e.ev(res["AuditorPolicy"]["Properties"]["PolicyDocument"]),
        "verifier-policy.json": e.ev(res["VerifierPolicy"]["Properties"]["PolicyDocument"]),
        "audit-table-resource-policy.json": e.ev(
            res["AuditTable"]["Properties"]["ResourcePolicy"]["PolicyDocument"]
        ),
        "streams-table-resource-policy.json": e.ev(
            res["StreamsTable"]["Properties"]["ResourcePolicy"]["PolicyDocument"]
        ),
        "shards-table-resource-policy.json": e.ev(
            res["ShardsTable"]["Properties"]["ResourcePolicy"]["PolicyDocument"]
        ),
    }


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "--check"
    stale = []
    for name, doc in generated().items():
        path = INFRA / name
        text = json.dumps(doc, indent=2) + "\n"
        if mode == "--write":
            path.write_text(text)
            print(f"wrote {path}")
        elif not path.exists() or json.loads(path.read_text()) != doc:
            stale.append(name)
    if stale:
        print(
            "infra/ IAM files differ from the CloudFormation template: "
            + ", ".join(stale)
            + "\n  run: .venv-iac/bin/python infra/cloudformation/policies.py --write",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
