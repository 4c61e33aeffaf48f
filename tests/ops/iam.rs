//! The IAM side of the end-to-end tests: what each command really asks of
//! AWS, held against the policy files in `infra/`.
//!
//! - [`Recorder`]: an HTTP proxy in front of the emulator that notes the IAM
//!   action and the resource ARNs of every request passing through it
//!   (`X-Amz-Target` names the action; the JSON body the table, index,
//!   stream or key). moto checks no resource of a DynamoDB call, so this is
//!   the only place a call the policy does not allow shows up.
//! - [`Policy`]: a small evaluator of identity and resource policies:
//!   Allow/Deny statements with `*`/`?` wildcards in actions and resources,
//!   the few conditions the shipped policies use, explicit Deny wins.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The emulator's account and region (moto's defaults).
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

/// One request as IAM sees it: `dynamodb:PutItem` on a table ARN.
#[derive(Clone, Debug)]
pub struct Call {
    pub action: String,
    pub resources: Vec<String>,
    /// The emulator's HTTP status (the call itself happened either way).
    pub status: u16,
}

/// A recording proxy in front of `upstream`. Point a command's
/// `AWS_ENDPOINT_URL` at [`Recorder::endpoint`].
pub struct Recorder {
    pub endpoint: String,
    calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    pub async fn start(upstream: &str) -> Recorder {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("the emulator's endpoint is http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        // Shard iterators name no stream: GetRecords is charged to the stream
        // whose GetShardIterator (or previous GetRecords) returned it.
        let iterators: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let (c, it) = (calls.clone(), iterators.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (c, it) = (c.clone(), it.clone());
                tokio::spawn(async move {
                    if let Err(e) = relay(client, upstream, &c, &it).await {
                        eprintln!("recording proxy: {e}");
                    }
                });
            }
        });
        Recorder {
            endpoint,
            calls,
            task,
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A request or response: its head's lines and its body.
struct Message {
    lines: Vec<String>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.lines.iter().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The same message with `Connection: close` (one request per
    /// connection: the proxy never has to find where a response ends).
    fn closing(&self) -> Vec<u8> {
        let mut out = String::new();
        for l in &self.lines {
            if l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
            {
                continue;
            }
            out.push_str(l);
            out.push_str("\r\n");
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Reads one request (head and a Content-Length body) from `s`.
async fn read_request(s: &mut TcpStream) -> std::io::Result<Option<Message>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut msg = Message {
        lines: head.split("\r\n").map(str::to_string).collect(),
        body: Vec::new(),
    };
    assert!(
        msg.header("transfer-encoding").is_none(),
        "recording proxy: a chunked request body: {head}"
    );
    let len: usize = msg
        .header("content-length")
        .map(|v| v.parse().expect("Content-Length"))
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    msg.body = body;
    Ok(Some(msg))
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    calls: &Mutex<Vec<Call>>,
    iterators: &Mutex<HashMap<String, String>>,
) -> std::io::Result<()> {
    let Some(request) = read_request(&mut client).await? else {
        return Ok(());
    };
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(&request.closing()).await?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw).await?;
    let head_end = find(&raw, b"\r\n\r\n").unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let response = Message {
        lines: head.split("\r\n").map(str::to_string).collect(),
        body: raw.get(head_end + 4..).unwrap_or_default().to_vec(),
    };
    let status: u16 = response.lines[0]
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let described = describe(&request, &response, status, iterators);
    calls.lock().unwrap().extend(described);
    client.write_all(&response.closing()).await?;
    client.shutdown().await
}

fn table_arn(name: &str) -> String {
    format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}")
}

/// The IAM actions and resources of one request: one, except for a
/// transaction, which IAM authorises item by item (a ConditionCheck as
/// `ConditionCheckItem`, a Put as `PutItem`, … on that item's table).
/// Anything this does not know becomes an `unknown:` action, which no
/// policy allows: a new kind of call fails the test until it is taught here.
fn describe(
    request: &Message,
    response: &Message,
    status: u16,
    iterators: &Mutex<HashMap<String, String>>,
) -> Vec<Call> {
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    if request.header("x-amz-target") == Some("DynamoDB_20120810.TransactWriteItems") {
        return body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|item| item.as_object().into_iter().flatten())
            .map(|(kind, op)| Call {
                action: match kind.as_str() {
                    "ConditionCheck" => "dynamodb:ConditionCheckItem".to_string(),
                    "Put" => "dynamodb:PutItem".to_string(),
                    "Update" => "dynamodb:UpdateItem".to_string(),
                    "Delete" => "dynamodb:DeleteItem".to_string(),
                    other => format!("unknown:TransactWriteItems.{other}"),
                },
                resources: vec![table_arn(op["TableName"].as_str().unwrap_or_default())],
                status,
            })
            .collect();
    }
    let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let Some(target) = request.header("x-amz-target") else {
        return vec![Call {
            action: format!("unknown:{}", request.lines[0]),
            resources: vec![],
            status,
        }];
    };
    let (service, op) = target.split_once('.').unwrap_or((target, ""));
    let prefix = match service {
        "DynamoDB_20120810" | "DynamoDBStreams_20120810" => "dynamodb",
        "TrentService" => "kms",
        _ => "unknown",
    };
    let action = format!("{prefix}:{op}");
    let s = |k: &str| body[k].as_str().map(str::to_string);
    let mut resources = Vec::new();
    match (prefix, op) {
        ("dynamodb", "BatchGetItem" | "BatchWriteItem") => {
            for t in body["RequestItems"].as_object().into_iter().flatten() {
                resources.push(table_arn(t.0));
            }
        }
        ("dynamodb", "ListStreams" | "ListTables" | "DescribeLimits") => resources.push("*".into()),
        ("dynamodb", "ListTagsOfResource" | "TagResource" | "UntagResource") => {
            resources.extend(s("ResourceArn"))
        }
        ("dynamodb", "DescribeStream" | "GetShardIterator") => {
            let stream = s("StreamArn").unwrap_or_default();
            if let Some(it) = answer["ShardIterator"].as_str() {
                iterators.lock().unwrap().insert(it.into(), stream.clone());
            }
            resources.push(stream);
        }
        ("dynamodb", "GetRecords") => {
            let stream = s("ShardIterator")
                .and_then(|it| iterators.lock().unwrap().get(&it).cloned())
                .unwrap_or_else(|| "unknown-shard-iterator".into());
            if let Some(next) = answer["NextShardIterator"].as_str() {
                iterators
                    .lock()
                    .unwrap()
                    .insert(next.into(), stream.clone());
            }
            resources.push(stream);
        }
        ("dynamodb", _) => match (s("TableName"), s("IndexName")) {
            (Some(t), Some(i)) => resources.push(format!("{}/index/{i}", table_arn(&t))),
            (Some(t), None) => resources.push(table_arn(&t)),
            _ => resources.push(format!("unknown-resource:{}", request.body.len())),
        },
        ("kms", _) => {
            let key = s("KeyId").unwrap_or_default();
            resources.push(if key.starts_with("arn:") {
                key
            } else {
                format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key}")
            });
        }
        _ => {}
    }
    vec![Call {
        action,
        resources,
        status,
    }]
}

// ------------------------------------------------------------ evaluation

/// IAM's answer for one action on one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed(String),
    /// No statement allows it.
    NotAllowed,
    /// A Deny statement (its Sid) matches.
    Denied(String),
}

/// A principal's policies: identity policies and the resource policies of
/// the tables it calls (Deny statements only, as the shipped ones are).
pub struct Policy {
    pub principal: String,
    pub identity: Vec<(String, Value)>,
    pub resource: Vec<(String, Value)>,
}

/// A policy file from `infra/` with the placeholders filled in.
pub fn load(name: &str, fill: &[(&str, &str)]) -> (String, Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("infra")
        .join(name);
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (from, to) in fill {
        text = text.replace(from, to);
    }
    (
        name.to_string(),
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        _ => vec![],
    }
}

/// IAM's wildcard match: `*` any run of characters, `?` one.
fn glob(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = if ignore_case {
        (
            pattern.to_ascii_lowercase().chars().collect(),
            text.to_ascii_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), text.chars().collect())
    };
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Policy {
    /// The conditions the shipped policies use, for a direct call by
    /// `self.principal` (no service in between: `aws:CalledVia` is empty).
    fn condition_holds(&self, file: &str, sid: &str, condition: &Value) -> bool {
        let Some(ops) = condition.as_object() else {
            return true;
        };
        ops.iter().all(|(op, keys)| {
            keys.as_object().into_iter().flatten().all(|(key, want)| {
                let want = strings(want);
                match (op.as_str(), key.as_str()) {
                    ("ArnNotEquals" | "ArnNotLike", "aws:PrincipalArn") => {
                        !want.iter().any(|w| glob(w, &self.principal, false))
                    }
                    ("ArnEquals" | "ArnLike", "aws:PrincipalArn") => {
                        want.iter().any(|w| glob(w, &self.principal, false))
                    }
                    // Over an empty set every value is "not equal".
                    ("ForAllValues:StringNotEquals", "aws:CalledVia") => true,
                    _ => panic!(
                        "{file} {sid}: the evaluator does not know the condition {op} {key}; \
                         teach it (tests/ops/iam.rs)"
                    ),
                }
            })
        })
    }

    pub fn decide(&self, action: &str, resource: &str) -> Decision {
        let mut allowed = None;
        for (file, doc) in self.identity.iter().chain(&self.resource) {
            for st in doc["Statement"].as_array().into_iter().flatten() {
                let sid = format!("{file} {}", st["Sid"].as_str().unwrap_or("(no Sid)"));
                assert!(
                    st.get("NotAction").is_none() && st.get("NotResource").is_none(),
                    "{sid}: NotAction/NotResource are not evaluated here"
                );
                let acts = strings(&st["Action"]);
                if !acts.iter().any(|a| glob(a, action, true)) {
                    continue;
                }
                let res = strings(&st["Resource"]);
                if !res.iter().any(|r| glob(r, resource, false)) {
                    continue;
                }
                let effect = st["Effect"].as_str().unwrap_or_default();
                // Only Deny conditions are evaluated; an Allow with a
                // condition (S3's prefix) allows nothing here.
                match effect {
                    "Deny" if self.condition_holds(file, &sid, &st["Condition"]) => {
                        return Decision::Denied(sid);
                    }
                    "Allow" if st.get("Condition").is_none() => {
                        allowed.get_or_insert(sid);
                    }
                    _ => {}
                }
            }
        }
        match allowed {
            Some(sid) if !self.identity.is_empty() => Decision::Allowed(sid),
            _ => Decision::NotAllowed,
        }
    }
}

#[test]
fn glob_matches_as_iam_does() {
    assert!(glob(
        "arn:aws:dynamodb:r:a:table/t/stream/*",
        "arn:aws:dynamodb:r:a:table/t/stream/2024",
        false
    ));
    assert!(!glob(
        "arn:aws:dynamodb:r:a:table/t",
        "arn:aws:dynamodb:r:a:table/t/index/i",
        false
    ));
    assert!(glob("dynamodb:Get*", "dynamodb:GetRecords", true));
    assert!(glob("*", "anything", false));
    assert!(!glob("a?c", "abbc", false));
}
