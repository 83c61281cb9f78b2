// The /verify page: loads the browser verifier (verify.wasm, built from anchor/proof, the code
// `anchorline verify` runs) and runs it on the files the person chooses. The files are read
// here and never sent; the only requests are GETs of the page's assets and, when chosen, of
// the server's published trust file.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const status = $("status");
  const steps = $("steps");
  const verdict = $("verdict");
  const chosen = { bundle: null, trust: null, serverTrust: null }; // each {name, bytes, sha256}
  let verifier = null;

  const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");

  // sha256 prefers the browser's own implementation; crypto.subtle exists only in a secure
  // context (https, or localhost), so over plain http the Go verifier computes it.
  async function sha256(bytes) {
    if (globalThis.crypto && crypto.subtle) {
      return hex(await crypto.subtle.digest("SHA-256", bytes));
    }
    if (verifier) {
      return verifier.sha256(new Uint8Array(bytes));
    }
    return "unavailable (open the page over https)";
  }

  function finish(kind, text) {
    verdict.className = kind;
    verdict.textContent = text;
    verdict.hidden = false;
  }

  async function load() {
    const url = document.body.dataset.wasm;
    const resp = await fetch(url);
    if (!resp.ok) {
      throw new Error(`GET ${url} answered ${resp.status} ${resp.statusText}`);
    }
    const buf = await resp.arrayBuffer();
    $("wasm-sha256").textContent = await sha256(buf);
    const go = new Go();
    const { instance } = await WebAssembly.instantiate(buf, go.importObject);
    go.run(instance); // serves calls until the page goes away
    if (!globalThis.anchorline || typeof anchorline.verify !== "function") {
      throw new Error("the verifier started but did not offer anchorline.verify");
    }
    verifier = globalThis.anchorline;
  }

  // line is a step as `anchorline verify` prints it.
  function line(s) {
    return `${s.ok ? "✓" : "✗"} ${s.name.padEnd(18)} ${s.detail}`;
  }

  function trust() {
    return $("trust-server").checked ? chosen.serverTrust : chosen.trust;
  }

  function showTrustHash() {
    const t = trust();
    $("trust-sha256").textContent = t ? `${t.sha256} (${t.name})` : "none chosen";
  }

  function run() {
    verdict.hidden = true;
    steps.replaceChildren();
    showTrustHash();
    if (!verifier) {
      return; // load() runs it once the verifier is there
    }
    const t = trust();
    if (!chosen.bundle || !t) {
      status.textContent = !chosen.bundle ? "Verifier ready. Choose a proof bundle." :
        $("trust-server").checked ? "Fetching the server's trust file…" : "Choose a trust file, or use the server's.";
      return;
    }
    status.textContent = `Verified ${chosen.bundle.name} against ${t.name}:`;
    const r = verifier.verify(chosen.bundle.bytes, t.bytes);
    // The lines `anchorline verify` prints (a range's completeness lines start with ✓ or !),
    // else the steps formatted the same way.
    const lines = r.lines && r.lines.length ? r.lines : r.steps.map(line);
    for (const l of lines) {
      const li = document.createElement("li");
      const mark = l.trimStart(); // an event bundle's range report is indented under its step
      const ok = mark.startsWith("✓"), note = mark.startsWith("!");
      li.className = ok ? "ok" : note ? "note" : "fail";
      const said = document.createElement("span");
      said.className = "visually-hidden";
      said.textContent = ok ? "passed: " : note ? "note: " : "failed: ";
      const text = document.createElement("samp");
      text.textContent = l;
      li.append(said, text);
      steps.append(li);
    }
    if (r.ok) {
      finish("ok", r.event ? "✓ event verified: the rule version was in force and fires on these readings as recorded"
        : r.range ? "✓ range verified: every step holds" : "✓ bundle verified: every step holds");
    } else {
      const failed = r.steps.find((s) => !s.ok);
      finish("fail", failed ? `✗ verification failed at step “${failed.name}”: ${r.error}` : `✗ verification failed: ${r.error}`);
    }
  }

  async function read(file) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    return { name: file.name, bytes, sha256: await sha256(bytes) };
  }

  // kind tells a bundle from a trust file by its "format", for files dropped together.
  function kind(bytes) {
    try {
      const format = JSON.parse(new TextDecoder().decode(bytes)).format;
      if (typeof format === "string" && format.startsWith("anchorline.trust/")) {
        return "trust";
      }
    } catch (e) {
      // not JSON: the verifier will say so when it reads it as a bundle
    }
    return "bundle";
  }

  function fail(e) {
    status.textContent = "";
    finish("fail", `✗ ${e.message}`);
  }

  async function fetchServerTrust() {
    const url = new URL(document.body.dataset.trust, document.baseURI);
    const resp = await fetch(url, { credentials: "omit", cache: "no-store" });
    if (!resp.ok) {
      throw new Error(`the server's trust file: GET ${url.pathname} answered ${resp.status} ${resp.statusText}`);
    }
    const bytes = new Uint8Array(await resp.arrayBuffer());
    chosen.serverTrust = { name: `the server's trust file (${url.pathname})`, bytes, sha256: await sha256(bytes) };
  }

  function place(input, file) {
    try {
      const dt = new DataTransfer();
      dt.items.add(file);
      input.files = dt.files; // show the dropped file in its input
    } catch (e) {
      // an older browser: the status line still names the file
    }
  }

  $("bundle").addEventListener("change", async (ev) => {
    const f = ev.target.files[0];
    chosen.bundle = f ? await read(f) : null;
    run();
  });
  $("trust").addEventListener("change", async (ev) => {
    const f = ev.target.files[0];
    chosen.trust = f ? await read(f) : null;
    if (f) {
      $("trust-own").checked = true;
    }
    run();
  });
  $("trust-own").addEventListener("change", run);
  $("trust-server").addEventListener("change", async () => {
    run();
    if (!chosen.serverTrust) {
      try {
        await fetchServerTrust();
      } catch (e) {
        fail(e);
        return;
      }
    }
    run();
  });

  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    for (const f of ev.dataTransfer.files) {
      const r = await read(f);
      if (kind(r.bytes) === "trust") {
        chosen.trust = r;
        $("trust-own").checked = true;
        place($("trust"), f);
      } else {
        chosen.bundle = r;
        place($("bundle"), f);
      }
    }
    run();
  });

  load().then(run, (e) => fail(new Error(`The verifier could not be loaded: ${e.message}`)));
})();
