"""Creates infra/cloudformation/ddb-audit.yaml as a stack in the emulator
(moto's CloudFormation) and prints, as JSON, what the stack made: its outputs
and what the services say about the tables, roles, policies, log group, task
definition, service and alarms. The Rust test (tests/ops_e2e.rs) asserts on
it and then runs the daemon, without `init`, against the stack's tables.

usage: cfn_stack.py ENDPOINT STACK_NAME AUDITED_TABLES PREFIX
"""
import json
import sys
import time
from pathlib import Path

import boto3

TEMPLATE = Path(__file__).resolve().parents[2] / "infra/cloudformation/ddb-audit.yaml"


def main() -> None:
    endpoint, stack, tables, prefix = sys.argv[1:5]
    kw = dict(endpoint_url=endpoint, region_name="us-east-1",
              aws_access_key_id="testing", aws_secret_access_key="testing")
    cfn = boto3.client("cloudformation", **kw)
    # The stack's config names a real digest-signing key (the daemon reads
    # its public half at start), and moto needs the optional KMS statements
    # filled in anyway (see below).
    kms_key = boto3.client("kms", **kw).create_key(
        KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY",
        Description="ddb-audit stack test: digest signing")["KeyMetadata"]["Arn"]
    ec2 = boto3.client("ec2", **kw)
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    sg = ec2.create_security_group(GroupName=f"{prefix}-sg", Description="ddb-audit", VpcId=vpc)["GroupId"]
    params = {
        "AuditedTables": tables,
        "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ddb-audit:test",
        "Subnets": subnet,
        "SecurityGroups": sg,
        "StreamsTableName": f"{prefix}-streams",
        "ShardsTableName": f"{prefix}-shards",
        "AuditTableName": f"{prefix}-entries",
        "AlarmTopicArn": f"arn:aws:sns:us-east-1:123456789012:{prefix}-alarms",
        "ActorAttribute": "updated_by",
        # moto keeps AWS::NoValue in a list as a null, and a null Statement is
        # a malformed policy: give the optional CloudTrail statements a bucket
        # and the optional KMS statements a key.
        "CloudTrailBucket": f"{prefix}-trail",
        "DigestKmsKeyArn": kms_key,
    }
    cfn.create_stack(
        StackName=stack,
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    deadline = time.time() + 120
    while True:
        s = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        if not s["StackStatus"].endswith("IN_PROGRESS"):
            break
        if time.time() > deadline:
            raise SystemExit(f"stack still {s['StackStatus']} after 120 s")
        time.sleep(0.5)
    report = {"status": s["StackStatus"],
              "outputs": {o["OutputKey"]: o["OutputValue"] for o in s.get("Outputs", [])}}
    if s["StackStatus"] != "CREATE_COMPLETE":
        events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
        report["failures"] = [e.get("ResourceStatusReason") for e in events if "FAILED" in e["ResourceStatus"]]
        print(json.dumps(report))
        return
    resources = cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
    # moto lists some resources (its alarms) without a logical id.
    report["resources"] = sorted(r["ResourceType"] for r in resources)
    phys = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources if r.get("LogicalResourceId")}

    ddb = boto3.client("dynamodb", **kw)
    tables_out = {}
    for logical in ("StreamsTable", "ShardsTable", "AuditTable"):
        t = ddb.describe_table(TableName=phys[logical])["Table"]
        entry = {
            "name": t["TableName"],
            "keys": [[k["AttributeName"], k["KeyType"]] for k in t["KeySchema"]],
            "billing": t.get("BillingModeSummary", {}).get("BillingMode"),
            "deletion_protection": t.get("DeletionProtectionEnabled"),
            "sse": t.get("SSEDescription", {}).get("Status"),
            "gsis": sorted(g["IndexName"] for g in t.get("GlobalSecondaryIndexes", [])),
        }
        try:
            cb = ddb.describe_continuous_backups(TableName=t["TableName"])
            entry["pitr"] = cb["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"]
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            entry["pitr"] = f"error: {e}"
        try:
            entry["resource_policy"] = bool(ddb.get_resource_policy(ResourceArn=t["TableArn"]).get("Policy"))
        except Exception as e:  # noqa: BLE001
            entry["resource_policy"] = f"error: {type(e).__name__}"
        tables_out[logical] = entry
    report["tables"] = tables_out

    iam = boto3.client("iam", **kw)
    role = iam.get_role(RoleName=phys["TaskRole"])["Role"]
    attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    report["task_role"] = {"name": role["RoleName"], "attached": [p["PolicyName"] for p in attached]}
    docs = {}
    for p in attached:
        pol = iam.get_policy(PolicyArn=p["PolicyArn"])["Policy"]
        v = iam.get_policy_version(PolicyArn=p["PolicyArn"], VersionId=pol["DefaultVersionId"])
        doc = v["PolicyVersion"]["Document"]
        docs[p["PolicyName"]] = json.loads(doc) if isinstance(doc, str) else doc
    report["task_policies"] = docs
    report["auditor_policy"] = iam.get_policy(PolicyArn=report["outputs"]["AuditorPolicyArn"])["Policy"]["PolicyName"]

    logs = boto3.client("logs", **kw)
    groups = logs.describe_log_groups(logGroupNamePrefix=f"/ecs/{stack}")["logGroups"]
    report["log_group"] = {g["logGroupName"]: g.get("retentionInDays") for g in groups}

    ecs = boto3.client("ecs", **kw)
    td = ecs.describe_task_definition(taskDefinition=phys["TaskDefinition"])["taskDefinition"]
    c = td["containerDefinitions"][0]
    report["task_definition"] = {
        "requires": td.get("requiresCompatibilities"),
        "cpu": td.get("cpu"),
        "memory": td.get("memory"),
        "read_only_root": c.get("readonlyRootFilesystem"),
        "user": c.get("user"),
        "stop_timeout": c.get("stopTimeout"),
        "health_check": (c.get("healthCheck") or {}).get("command"),
        "log_driver": (c.get("logConfiguration") or {}).get("logDriver"),
        "env": {e["name"]: e["value"] for e in c.get("environment", [])},
    }
    cluster = report["outputs"].get("ClusterName")
    try:
        svc = ecs.describe_services(cluster=cluster, services=[phys["Service"]])["services"]
        report["service"] = {
            "desired": svc[0].get("desiredCount") if svc else None,
            "maximum_percent": (svc[0].get("deploymentConfiguration") or {}).get("maximumPercent") if svc else None,
            "minimum_healthy_percent": (svc[0].get("deploymentConfiguration") or {}).get("minimumHealthyPercent") if svc else None,
        }
    except Exception as e:  # noqa: BLE001
        report["service"] = f"error: {e}"
    cw = boto3.client("cloudwatch", **kw)
    alarms = cw.describe_alarms()["MetricAlarms"]
    report["alarms"] = {a["MetricName"]: {"namespace": a["Namespace"], "actions": a.get("AlarmActions", [])}
                        for a in alarms if a["Namespace"] == "ddb-audit"}
    # moto's CloudFormation makes no CloudWatch alarms: read them from the template.
    report["template_alarms"] = template_alarms()
    print(json.dumps(report))


def template_alarms() -> dict:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {f"!{suffix}": value}

    Loader.add_multi_constructor("!", tagged)
    t = yaml.load(TEMPLATE.read_text(), Loader=Loader)
    return {
        name: {"metric": r["Properties"]["MetricName"], "namespace": r["Properties"]["Namespace"],
               "actions": r["Properties"].get("AlarmActions")}
        for name, r in t["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }


if __name__ == "__main__":
    main()
