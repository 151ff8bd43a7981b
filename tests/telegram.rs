//! The Telegram bot end to end: the real binary against a loopback fake of
//! the Bot API, driven by the updates a user's client would send.

use buildmaster_e2e::{run_cli, wait_until, Basedir, FakeTelegram, Master, TelegramCall};
use serde_json::{json, Value};

const TOKEN: &str = "12345:s3cr3t-token";

/// Buildbot's refusals.
const DENIALS: [&str; 6] = [
    "🧙\u{200d}♂\u{fe0f} You shall not pass! 👹",
    "😨 Oh NO! You are simply not allowed to this! 😢",
    "⛔ You cannot do this. Better go outside and relax... 🌳",
    "⛔ ACCESS DENIED! This incident has ben reported to NSA, KGB, and George Soros! 🕵",
    "🚫 Unauthorized access detected! Your device will explode in 3... 2... 1... 💣",
    "☢ Radiation level too high! Continuation of the procedure forbidden! 🛑",
];

/// Harry, in the group and in his private chat; Ron has no username.
fn harry() -> Value {
    json!({"id": 111, "first_name": "Harry", "last_name": "Potter", "username": "harrypotter"})
}
fn ron() -> Value {
    json!({"id": 222, "first_name": "Ron"})
}
fn group() -> Value {
    json!({"id": -100, "title": "Hogwarts", "type": "group"})
}
fn private() -> Value {
    json!({"id": 111, "type": "private"})
}

/// Two builders on a local worker; builder1's build fails for a revision
/// starting with "fail" and runs long for one starting with "slow". `bot`
/// is the rest of `[telegram]`; `extra` more tables.
fn config(fake: &FakeTelegram, bot: &str, extra: &str) -> String {
    format!(
        r#"
[master]
title = "Hogwarts CI"
buildbot_url = "http://ci.example.org/"
reload_on_change = false

[www.change_hook_dialects]
base = true

[[workers]]
type = "local"
name = "w13"

[[builders]]
name = "builder1"
workernames = ["w13"]
[[builders.steps]]
type = "shell"
name = "compile"
command = ["sh", "-c", "case %(src::revision)s in fail*) exit 1;; slow*) sleep 60;; esac"]

[[builders]]
name = "builder2"
workernames = ["w13"]
[[builders.steps]]
type = "shell"
name = "compile"
command = ["true"]

[[schedulers]]
type = "any_branch"
name = "all"
builder_names = ["builder1"]

{extra}

[telegram]
bot_token = "{TOKEN}"
api_url = "{}"
poll_timeout = 1
retry_delay = 1
{bot}
"#,
        fake.url()
    )
}

fn hook(master: &Master, revision: &str, author: &str) {
    let reply = master.post_form(
        "/change_hook/base",
        &format!("branch=main&revision={revision}&repository=repo&author={author}&comments=c"),
    );
    assert_eq!((reply.status, reply.body.as_str()), (200, "1 change found"));
}

fn methods(calls: &[TelegramCall]) -> Vec<&str> {
    calls.iter().map(|c| c.method.as_str()).collect()
}

/// The calls after the first `skip`.
fn since(fake: &FakeTelegram, skip: usize) -> Vec<TelegramCall> {
    fake.calls().into_iter().skip(skip).collect()
}

/// Sends a probe and waits for its answer: updates are handled in order, so
/// every update sent before it has been handled.
fn barrier(fake: &FakeTelegram) {
    let probe = json!({"id": 999, "type": "private"});
    let count = fake.texts_to(999).len();
    fake.message(
        "/version",
        &probe,
        &json!({"id": 999, "first_name": "Probe"}),
    );
    fake.wait_texts(999, count + 1);
}

/// Waits until the bot polls again: it has handled what came before.
fn settled(fake: &FakeTelegram) {
    let before = fake.calls_of("getUpdates").len();
    fake.wait_for("the next long poll", |calls| {
        calls.iter().filter(|c| c.method == "getUpdates").count() > before
    });
}

#[test]
fn the_bot_introduces_itself_polls_and_answers_basic_commands() {
    let fake = FakeTelegram::start("TestBot");
    let master = Master::start(&config(&fake, "", ""));
    let calls = fake.wait_for("the first long poll", |calls| {
        calls.iter().any(|c| c.method == "getUpdates")
    });
    assert_eq!(
        methods(&calls)[..4],
        ["getMe", "setMyCommands", "deleteWebhook", "getUpdates"]
    );
    assert!(calls.iter().all(|c| c.token == TOKEN));
    let commands = calls[1].body["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 15);
    assert_eq!(
        commands[0],
        json!({"command": "commands", "description": "list available commands"})
    );
    assert_eq!(
        calls[3].body,
        json!({"timeout": 1, "allowed_updates": ["message", "callback_query"]})
    );

    let id = fake.message("/getid", &group(), &harry());
    assert_eq!(
        fake.wait_texts(-100, 2),
        [
            "Harry, your ID is <code>111</code>.",
            "This group ID is <code>-100</code>."
        ]
    );
    let sent = fake.calls_of("sendMessage");
    assert_eq!(sent[0].body["parse_mode"], "HTML");
    settled(&fake);
    let polls = fake.calls_of("getUpdates");
    assert_eq!(polls.last().unwrap().body["offset"], id + 1);

    // Addressed to this bot (in any case), to another one, or to nobody.
    fake.message("/GETID@testbot", &group(), &harry());
    fake.message("/getid@otherbot", &group(), &harry());
    fake.message("/foo", &group(), &harry());
    fake.message("hello there", &group(), &harry());
    let texts = fake.wait_texts(-100, 6);
    assert_eq!(texts[2], "Harry, your ID is <code>111</code>.");
    assert_eq!(texts[4], "I don't get this '/foo'...");
    assert!(texts[5].starts_with("Buildbot commands: /commands, /force, /getid"));
    settled(&fake);
    assert_eq!(
        fake.texts_to(-100).len(),
        6,
        "nothing for otherbot or chatter"
    );

    // A private chat answers chatter; quoting mistakes are said.
    fake.message("hello there", &private(), &harry());
    fake.message("wow!", &private(), &harry());
    fake.message("/help list", &private(), &harry());
    fake.message("/list 'unclosed", &private(), &harry());
    fake.message("/help nosuch", &private(), &harry());
    assert_eq!(
        fake.wait_texts(111, 5),
        [
            "Say what?",
            "What you say!",
            "Usage: /list [all|N] builders|workers|changes - list configured builders, workers, or N recent changes",
            "No closing quotation",
            "There is no such command 'nosuch'.",
        ]
    );

    // Dangerous commands are denied by default, as a reply.
    fake.message("/shutdown", &group(), &harry());
    fake.wait_texts(-100, 7);
    let denial = fake.calls_of("sendMessage").last().unwrap().clone();
    assert_eq!(denial.body["reply_to_message_id"], 77);
    assert!(!denial.body["text"]
        .as_str()
        .unwrap()
        .contains("What do you want"));

    // A click without a message (inline mode) and an update of another kind
    // do not stop the bot.
    fake.push_update(json!({"callback_query": {"id": "q9", "from": harry(), "data": "/getid"}}));
    fake.push_update(
        json!({"edited_message": {"message_id": 5, "chat": group(), "text": "/getid"}}),
    );
    fake.message("/start", &private(), &harry());
    let calls = fake.wait_for("/start's help", |calls| {
        calls
            .iter()
            .filter(|c| c.method == "sendMessage" && c.body["chat_id"] == 111)
            .count()
            >= 7
    });
    assert!(calls
        .iter()
        .any(|c| c.method == "answerCallbackQuery" && c.body["callback_query_id"] == "q9"));
    assert!(calls.iter().any(|c| c.method == "setChatMenuButton"
        && c.body == json!({"chat_id": 111, "menu_button": {"type": "commands"}})));
    let texts = fake.texts_to(111);
    assert_eq!(texts[6].lines().count(), 15, "{}", texts[6]);
    assert!(
        !master.log().contains("s3cr3t"),
        "the token is never logged"
    );
}

#[test]
fn notifications_reach_subscribed_chats_and_subscriptions_survive_a_restart() {
    let fake = FakeTelegram::start("testbot");
    let base = Basedir::new(&config(
        &fake,
        "chat_ids = [-123456]\nnotify_events = [\"failure\"]",
        "",
    ));
    let master = base.start();
    settled(&fake);
    fake.message("/notify on", &private(), &harry());
    assert_eq!(
        fake.wait_texts(111, 1),
        ["The following events are being notified:\n🔔 <b>finished</b>\n🔔 <b>started</b>"]
    );

    hook(&master, "ok1", "Ada");
    let calls = fake.wait_for("the start, edited into the end", |calls| {
        calls.iter().any(|c| c.method == "editMessageText")
    });
    let started = calls
        .iter()
        .find(|c| {
            c.method == "sendMessage"
                && c.body["chat_id"] == 111
                && c.body["text"].as_str().unwrap().starts_with("Build ")
        })
        .unwrap();
    let link = "<a href=\"http://ci.example.org/#/builders/1/builds/1\">#1</a>";
    assert_eq!(
        started.body["text"],
        format!("Build {link} of <code>builder1</code> started.")
    );
    assert_eq!(
        started.body["reply_markup"],
        json!({"inline_keyboard": [[{"text": "Open build", "url": "http://ci.example.org/#/builders/1/builds/1"}]]})
    );
    let edit = calls
        .iter()
        .find(|c| c.method == "editMessageText")
        .unwrap();
    assert_eq!(edit.body["chat_id"], 111);
    assert_eq!(
        edit.body["text"],
        format!("Build {link} of <code>builder1</code> completed successfully ✅.")
    );
    assert!(
        fake.texts_to(-123456).is_empty(),
        "that chat hears of failures only"
    );

    hook(&master, "fail2", "Bob+%3Cbob%40example.org%3E");
    let texts = fake.wait_texts(-123456, 1);
    let link = "<a href=\"http://ci.example.org/#/builders/1/builds/2\">#2</a>";
    assert!(
        texts[0].starts_with(&format!("Build {link} of <code>builder1</code> failed❗: ")),
        "{}",
        texts[0]
    );
    assert!(
        texts[0].ends_with("\nBlamelist: Bob &lt;bob@example.org&gt;"),
        "{}",
        texts[0]
    );

    // The switches edit their own keyboard; a wrong event is said.
    let before = fake.calls().len();
    fake.message("/notify", &private(), &harry());
    fake.click("/notify off-quiet started", &private(), &harry());
    fake.message("/notify off bogus", &private(), &harry());
    let calls = fake.wait_for("the switch and the error", |calls| {
        calls[before..]
            .iter()
            .filter(|c| c.method == "sendMessage")
            .count()
            >= 2
    });
    let keyboard = calls[before..]
        .iter()
        .find(|c| c.method == "editMessageReplyMarkup")
        .expect("the keyboard edited in place");
    assert_eq!(keyboard.body["message_id"], 88);
    assert_eq!(
        keyboard.body["reply_markup"]["inline_keyboard"][0][0],
        json!({"text": "Started 🔕", "callback_data": "/notify on-quiet started"})
    );
    let texts = fake.texts_to(111);
    assert!(texts
        .last()
        .unwrap()
        .starts_with("There is no event 'bogus'."));

    // After a restart: the same subscriptions.
    let (base, _) = master.stop();
    let _master = base.start();
    settled(&fake);
    let count = fake.texts_to(111).len();
    fake.message("/notify list", &private(), &harry());
    let texts = fake.wait_texts(111, count + 1);
    assert_eq!(
        texts.last().unwrap(),
        "The following events are being notified:\n🔔 <b>finished</b>"
    );
}

#[test]
fn stopping_a_build_asks_for_a_reason_and_a_confirmation_across_a_reload() {
    let fake = FakeTelegram::start("testbot");
    let bot = "authz = { \"!\" = [111] }";
    let base = Basedir::new(&config(&fake, bot, ""));
    let master = base.start();
    settled(&fake);
    hook(&master, "slow1", "Ada");
    wait_until("the build to run", || {
        master
            .builds()
            .first()
            .map(|b| b["complete"] == false)
            .filter(|r| *r)
    });
    fake.message("/stop", &group(), &harry());
    fake.wait_texts(-100, 1);
    let select = fake.calls_of("sendMessage").last().unwrap().clone();
    assert_eq!(select.body["text"], "Select builder to stop...");
    assert_eq!(
        select.body["reply_markup"],
        json!({"inline_keyboard": [[{"text": "🚫 builder1", "callback_data": "/stop build builder1"}]]})
    );
    fake.click("/stop build builder1", &group(), &harry());
    fake.wait_texts(-100, 2);
    let question = fake.calls_of("sendMessage").last().unwrap().clone();
    assert_eq!(
        question.body["text"],
        "Ok @harrypotter, now give me the reason to stop build on <code>builder1</code>..."
    );
    assert_eq!(
        question.body["reply_markup"],
        json!({"force_reply": true, "selective": true})
    );
    // The fake numbers messages from 1001 on.
    let prompt_id = 1000 + fake.calls_of("sendMessage").len() as i64;

    // A reload keeps the question and the poller.
    let text = std::fs::read_to_string(base_path(&master)).unwrap();
    std::fs::write(base_path(&master), text.replace("Hogwarts CI", "Hogwarts")).unwrap();
    let output = run_cli(&["reconfig", master.basedir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    master.wait_for_generation(2);

    let prompt = question.body["text"].clone();
    fake.push_update(json!({"message": {
        "message_id": 90, "from": harry(), "chat": group(), "date": 1,
        "text": "because I said so",
        "reply_to_message": {"message_id": prompt_id, "text": prompt}
    }}));
    fake.wait_texts(-100, 3);
    let confirm = fake.calls_of("sendMessage").last().unwrap().clone();
    assert_eq!(
        confirm.body["text"],
        "Which build of <code>builder1</code> do you want to stop (<a href=\"http://ci.example.org/#/builders/1/builds/1\">#1</a>)? The reason will be: because I said so"
    );
    let button = &confirm.body["reply_markup"]["inline_keyboard"][0][0];
    assert_eq!(button["text"], "🚫 Stop build #1");
    fake.click(
        button["callback_data"].as_str().unwrap(),
        &group(),
        &harry(),
    );
    assert_eq!(
        fake.wait_texts(-100, 4)[3],
        "Build <a href=\"http://ci.example.org/#/builders/1/builds/1\">#1</a> of <code>builder1</code> interrupted."
    );
    let build = master.wait_for_build(1);
    assert!(
        build["state_string"]
            .as_str()
            .unwrap()
            .contains("stopped: by Harry Potter (@harrypotter) on 'Hogwarts': because I said so"),
        "{build}"
    );
    let calls = fake.calls();
    assert_eq!(
        calls.iter().filter(|c| c.method == "deleteWebhook").count(),
        1,
        "the reload did not restart the poller"
    );

    // Ron may not: his click gets the refusal as a toast, and nothing else.
    let before = fake.calls().len();
    fake.click("/shutdown start", &group(), &ron());
    barrier(&fake);
    let after = since(&fake, before);
    let answer = after
        .iter()
        .find(|c| c.method == "answerCallbackQuery")
        .unwrap();
    assert!(DENIALS.contains(&answer.body["text"].as_str().unwrap()));
    assert!(!after
        .iter()
        .any(|c| c.method == "sendMessage" && c.body["chat_id"] == -100));

    // Shutting down now asks first.
    fake.message("/shutdown check", &group(), &harry());
    fake.message("/shutdown now", &group(), &harry());
    let texts = fake.wait_texts(-100, 6);
    assert_eq!(texts[4], "Status: buildbot is running.");
    assert_eq!(
        texts[5],
        "Stop the master now? Running builds will be interrupted."
    );
}

fn base_path(master: &Master) -> std::path::PathBuf {
    master.basedir.path().join("master.toml")
}

#[test]
fn force_walks_through_the_parameters_and_starts_the_build() {
    let fake = FakeTelegram::start("testbot");
    let force = r#"
[[schedulers]]
type = "force"
name = "force1"
builder_names = ["builder1", "builder2"]
reason = { required = true, default = "" }
"#;
    let master = Master::start(&config(&fake, "authz = { \"!\" = true }", force));
    settled(&fake);
    fake.message("/force", &group(), &harry());
    fake.wait_texts(-100, 1);
    let which = fake.calls_of("sendMessage").last().unwrap().clone();
    assert_eq!(which.body["text"], "Which builder do you want to start?");
    assert_eq!(
        which.body["reply_markup"]["inline_keyboard"][0][0],
        json!({"text": "builder1", "callback_data": "/force force1 config builder1"})
    );
    fake.click("/force force1 config builder1", &group(), &harry());
    let screen = fake.wait_texts(-100, 2)[1].clone();
    assert!(
        screen.starts_with("Harry Potter, you are about to start a new build on <code>builder1</code>!\n\nThe current build parameters are:\n    reason <code></code> ⚠\u{fe0f}"),
        "{screen}"
    );
    assert!(screen.ends_with(
        "What do you want to do? You must set values for all parameters marked with ⚠\u{fe0f}"
    ));
    let rows = fake.calls_of("sendMessage").last().unwrap().body["reply_markup"]["inline_keyboard"]
        .clone();
    assert!(!rows.to_string().contains("Start Build"));

    fake.message("/force force1 ask reason builder1", &group(), &harry());
    let asked = fake.wait_texts(-100, 3)[2].clone();
    assert_eq!(
        asked,
        "@harrypotter, now enter the new value for the reason..."
    );
    let prompt_id = 1000 + fake.calls_of("sendMessage").len() as i64;
    fake.push_update(json!({"message": {
        "message_id": 91, "from": harry(), "chat": group(), "date": 1,
        "text": "fix the thing that broke the frobnicator", "reply_to_message": {"message_id": prompt_id}
    }}));
    let screen = fake.wait_texts(-100, 4)[3].clone();
    assert!(
        screen.contains("\n    reason <code>fix the thing that broke the frobnicator</code>\n"),
        "{screen}"
    );
    let rows = fake.calls_of("sendMessage").last().unwrap().body["reply_markup"]["inline_keyboard"]
        .clone();
    let start = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row[0]["text"] == "🚀 Start Build")
        .expect("a start button")[0]["callback_data"]
        .as_str()
        .unwrap()
        .to_string();
    // Too long for Telegram's 64 bytes: stored, and sent as its number.
    assert!(start.parse::<i64>().is_ok(), "{start}");
    fake.click(&start, &group(), &harry());
    assert_eq!(
        fake.wait_texts(-100, 5)[4],
        "Force build successfully requested."
    );
    let build = wait_until("the forced build", || master.builds().into_iter().next());
    assert_eq!(
        build["properties"]["reason"][0],
        "fix the thing that broke the frobnicator"
    );
    assert_eq!(
        build["properties"]["owner"][0],
        "Harry Potter (@harrypotter) on 'Hogwarts'"
    );

    // A button nobody knows any more.
    let before = fake.calls().len();
    fake.click("999999", &group(), &harry());
    barrier(&fake);
    let after = since(&fake, before);
    let stale: Vec<&str> = methods(&after)
        .into_iter()
        .filter(|m| *m != "getUpdates" && *m != "sendMessage")
        .collect();
    assert_eq!(stale, ["editMessageReplyMarkup", "answerCallbackQuery"]);
    let answer = after
        .iter()
        .find(|c| c.method == "answerCallbackQuery")
        .unwrap();
    assert_eq!(answer.body["text"], "Sorry, button is no longer valid!");
}

#[test]
fn a_webhook_takes_updates_only_with_its_secret() {
    let fake = FakeTelegram::start("testbot");
    let master = Master::start(&config(
        &fake,
        "use_webhook = true\nbot_username = \"testbot\"",
        "",
    ));
    let calls = fake.wait_for("setWebhook", |calls| {
        calls.iter().any(|c| c.method == "setWebhook")
    });
    assert!(
        !methods(&calls).contains(&"getMe"),
        "the username is configured"
    );
    assert!(!methods(&calls).contains(&"getUpdates"));
    let set = calls.iter().find(|c| c.method == "setWebhook").unwrap();
    let url = set.body["url"].as_str().unwrap();
    assert!(url.starts_with("http://ci.example.org/telegram/"), "{url}");
    assert!(!url.contains("s3cr3t"), "{url}");
    let secret = set.body["secret_token"].as_str().unwrap();
    let path = url.trim_start_matches("http://ci.example.org");
    let update = json!({"update_id": 5, "message": {
        "message_id": 77, "from": harry(), "chat": private(), "date": 1, "text": "/getid"
    }})
    .to_string();
    let json_type = ("Content-Type", "application/json");
    let none = master.send("POST", path, &[json_type], update.as_bytes());
    assert_eq!(none.status, 403);
    let wrong = master.send(
        "POST",
        path,
        &[json_type, ("X-Telegram-Bot-Api-Secret-Token", "nope")],
        update.as_bytes(),
    );
    assert_eq!(wrong.status, 403);
    assert!(!wrong.body.contains(secret));
    let header = ("X-Telegram-Bot-Api-Secret-Token", secret);
    let form = master.send(
        "POST",
        path,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            header,
        ],
        update.as_bytes(),
    );
    assert_eq!(form.status, 400);
    let taken = master.send("POST", path, &[json_type, header], update.as_bytes());
    assert_eq!((taken.status, taken.body.as_str()), (200, ""));
    assert_eq!(fake.wait_texts(111, 1), ["Your ID is <code>111</code>."]);
    let elsewhere = master.send("POST", "/telegram/other", &[json_type, header], b"{}");
    assert_eq!(elsewhere.status, 404);
}

#[test]
fn the_bot_copes_with_refusals_limits_and_outages() {
    let fake = FakeTelegram::start("testbot");
    let master = Master::start(&config(
        &fake,
        "chat_ids = [-300, -200]\nnotify_events = [\"finished\"]",
        "",
    ));
    settled(&fake);

    // Two failed polls: said once, then polling goes on.
    fake.fail_next(
        "getUpdates",
        502,
        json!({"ok": false, "error_code": 502, "description": "Bad Gateway"}),
    );
    fake.fail_next(
        "getUpdates",
        502,
        json!({"ok": false, "error_code": 502, "description": "Bad Gateway"}),
    );
    settled(&fake);
    settled(&fake);
    // Too fast: told to wait a second, then sent.
    fake.fail_next(
        "sendMessage",
        429,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}}),
    );
    fake.message("/getid", &private(), &harry());
    assert_eq!(
        fake.wait_texts(111, 2).len(),
        2,
        "sent again after the wait"
    );
    // Markup Telegram cannot parse: sent again as plain text.
    fake.fail_next(
        "sendMessage",
        400,
        json!({"ok": false, "error_code": 400, "description": "Bad Request: can't parse entities: unsupported start tag"}),
    );
    fake.message("/getid", &private(), &harry());
    let calls = fake.wait_for("the plain resend", |calls| {
        calls
            .iter()
            .filter(|c| c.method == "sendMessage" && c.body["chat_id"] == 111)
            .count()
            >= 4
    });
    let resend = calls
        .iter()
        .rfind(|c| c.method == "sendMessage" && c.body["chat_id"] == 111)
        .unwrap();
    assert_eq!(resend.body["text"], "Your ID is 111.");
    assert!(resend.body.get("parse_mode").is_none());

    // A chat that blocked the bot loses its subscription.
    fake.fail_next(
        "sendMessage",
        403,
        json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
    );
    hook(&master, "ok1", "Ada");
    wait_until("the chat to be dropped", || {
        master.log().contains("chat -300 is gone").then_some(())
    });
    hook(&master, "ok2", "Ada");
    // Chat -200 (announced after -300) hears of both builds: the second end
    // has been announced.
    fake.wait_texts(-200, 2);
    assert_eq!(
        fake.calls_of("sendMessage")
            .iter()
            .filter(|c| c.body["chat_id"] == -300)
            .count(),
        1,
        "nothing more to the chat that blocked the bot"
    );
    let log = master.log();
    assert_eq!(
        log.matches("cannot send Telegram request getUpdates")
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains("s3cr3t"));
}

#[test]
fn reading_commands_tell_what_runs_within_the_bots_tags() {
    let fake = FakeTelegram::start("testbot");
    let bot = "tags = [\"ci\"]\nuse_revisions = true\nchat_ids = [\"@hogwarts_news\"]\nnotify_events = [\"finished\"]";
    let text = config(&fake, bot, "")
        .replace(
            "name = \"builder1\"\n",
            "name = \"builder1\"\ntags = [\"ci\"]\n",
        )
        .replace(
            "case %(src::revision)s in",
            "case %(src::revision)s in nap*) sleep 2;;",
        );
    let master = Master::start(&text);
    settled(&fake);
    fake.message("/list all builders", &private(), &harry());
    fake.message("/list workers", &private(), &harry());
    assert_eq!(
        fake.wait_texts(111, 2),
        [
            "I found the following <b>builders</b>:\n<code>builder1</code>",
            "I found the following <b>workers</b>:\n<code>w13</code>",
        ]
    );
    hook(&master, "0b1c2d3e4f5061728394a5b6c7d8e9f001122334", "Ada");
    let texts = fake.wait_for("the channel's notification", |calls| {
        calls
            .iter()
            .any(|c| c.method == "sendMessage" && c.body["chat_id"] == buildmaster_e2e::CHANNEL_ID)
    });
    let channel = texts
        .iter()
        .find(|c| c.body["chat_id"] == buildmaster_e2e::CHANNEL_ID)
        .unwrap();
    assert!(
        channel.body["text"]
            .as_str()
            .unwrap()
            .contains("of <code>builder1</code> containing revision <code>0b1c2d3</code> completed successfully ✅."),
        "{}",
        channel.body["text"]
    );
    fake.message("/last", &private(), &harry());
    fake.message("/list changes", &private(), &harry());
    let texts = fake.wait_texts(111, 5);
    assert!(
        texts[2].starts_with("<code>builder1</code>: last build <a href=\"http://ci.example.org/#/builders/1/builds/1\">#1</a> completed successfully ✅ ("),
        "{}",
        texts[2]
    );
    assert_eq!(texts[3], "⏳ Getting your changes...");
    assert!(
        texts[4].starts_with("I found the following recent <b>changes</b>:\n\nc\n<i>Author</i>: Ada\n<i>Date</i>: 20"),
        "{}",
        texts[4]
    );
    // The fake numbers messages from 1001 on.
    let notice = 1001
        + fake
            .calls_of("sendMessage")
            .iter()
            .position(|c| c.body["text"] == "⏳ Getting your changes...")
            .unwrap() as i64;
    assert!(fake
        .calls_of("deleteMessage")
        .iter()
        .any(|c| c.body == json!({"chat_id": 111, "message_id": notice})));

    // A build to watch, from a forum topic.
    hook(&master, "nap2", "Ada");
    wait_until("the nap to start", || {
        master
            .builds()
            .iter()
            .any(|b| b["number"] == 2 && b["complete"] == false)
            .then_some(())
    });
    fake.message("/status", &private(), &harry());
    fake.message("/watch", &private(), &harry());
    let texts = fake.wait_texts(111, 7);
    assert!(
        texts[5].starts_with("<code>builder1</code>: running 🌀: build <a href=\"http://ci.example.org/#/builders/1/builds/2\">#2</a> ("),
        "{}",
        texts[5]
    );
    assert_eq!(texts[6], "Which builder do you want to watch?");
    fake.push_update(json!({"message": {
        "message_id": 70, "from": harry(), "chat": {"id": -500, "type": "supergroup", "title": "Forum", "is_forum": true},
        "date": 1, "text": "/watch builder1", "message_thread_id": 9, "is_topic_message": true
    }}));
    let calls = fake.wait_for("the watched build's end", |calls| {
        calls
            .iter()
            .filter(|c| c.method == "sendMessage" && c.body["chat_id"] == -500)
            .count()
            >= 2
    });
    let forum: Vec<&TelegramCall> = calls
        .iter()
        .filter(|c| c.method == "sendMessage" && c.body["chat_id"] == -500)
        .collect();
    assert_eq!(
        forum[0].body["text"],
        "Watching build <a href=\"http://ci.example.org/#/builders/1/builds/2\">#2</a> of <code>builder1</code> until it finishes..."
    );
    assert_eq!(
        forum[0].body["message_thread_id"], 9,
        "answered in the topic"
    );
    assert!(forum[1].body["text"].as_str().unwrap().ends_with(
        "of <code>builder1</code> containing revision <code>nap2</code> completed successfully ✅."
    ));

    // /nay takes the keyboard off the message it answers.
    fake.push_update(json!({"message": {
        "message_id": 71, "from": harry(), "chat": group(), "date": 1, "text": "/nay",
        "reply_to_message": {"message_id": 1005, "reply_markup": {"inline_keyboard": []}}
    }}));
    assert_eq!(fake.wait_texts(-100, 1), ["Never mind, Harry..."]);
    assert!(fake
        .calls_of("editMessageReplyMarkup")
        .iter()
        .any(|c| c.body == json!({"chat_id": -100, "message_id": 1005})));

    // A group that became a supergroup: answered there, its events moved.
    fake.message("/notify on failure", &group(), &harry());
    fake.wait_texts(-100, 2);
    fake.fail_next(
        "sendMessage",
        400,
        json!({"ok": false, "error_code": 400, "description": "Bad Request: group chat was upgraded to a supergroup chat", "parameters": {"migrate_to_chat_id": -1009}}),
    );
    fake.message("/notify list", &group(), &harry());
    assert_eq!(
        fake.wait_texts(-1009, 1),
        ["The following events are being notified:\n🔔 <b>failure</b>"]
    );
    fake.message(
        "/notify list",
        &json!({"id": -1009, "type": "supergroup", "title": "Hogwarts"}),
        &harry(),
    );
    assert_eq!(
        fake.wait_texts(-1009, 2)[1],
        "The following events are being notified:\n🔔 <b>failure</b>"
    );
}

#[test]
fn checkconfig_names_every_telegram_mistake_with_its_line() {
    let fake = FakeTelegram::start("testbot");
    let base = Basedir::new(&config(
        &fake,
        "notify_events = [\"finished\", \"bogus\"]\nauthz = { \"force,dance\" = true }\nusePolling = true",
        "",
    ));
    let output = run_cli(&["checkconfig", base.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = std::fs::read_to_string(base.path().join("master.toml")).unwrap();
    let line = text.lines().position(|l| l == "[telegram]").unwrap() + 1;
    assert!(
        stderr.contains(&format!(
            "master.toml:{line}:1: telegram.usePolling: unknown option"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
    let base = Basedir::new(&config(
        &fake,
        "notify_events = [\"finished\", \"bogus\"]\nauthz = { \"force,dance\" = true }",
        "",
    ));
    let output = run_cli(&["checkconfig", base.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            ":{line}:1: telegram.authz: unknown command 'dance' in key 'force,dance'"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            ":{line}:1: telegram.notify_events: unknown event 'bogus'"
        )),
        "{stderr}"
    );
    assert!(
        fake.calls().is_empty(),
        "checkconfig does not call Telegram"
    );
}

#[test]
fn a_webhook_with_a_certificate_uploads_it() {
    let fake = FakeTelegram::start("testbot");
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";
    let base = Basedir::new(&config(
        &fake,
        "use_webhook = true\nbot_username = \"testbot\"\ncertificate = \"telegram.pem\"",
        "",
    ));
    base.write("telegram.pem", pem);
    let _master = base.start();
    let calls = fake.wait_for("setWebhook", |calls| {
        calls.iter().any(|c| c.method == "setWebhook")
    });
    let set = calls.iter().find(|c| c.method == "setWebhook").unwrap();
    // A multipart form: the address, the secret, and the certificate file.
    assert!(set.body["url"]
        .as_str()
        .unwrap()
        .starts_with("http://ci.example.org/telegram/"));
    assert!(!set.body["secret_token"].as_str().unwrap().is_empty());
    assert_eq!(set.body["_files"]["certificate"], pem);
}
