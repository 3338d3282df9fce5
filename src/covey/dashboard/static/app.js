// covey's dashboard: live fragments (server-sent events), live logs, actions by POST.
// What this puts into the page is either HTML the server escaped (a fragment) or plain
// text (text nodes): nothing a job prints is ever parsed as HTML here.
(function () {
  "use strict";
  var MIN_GAP = 1000; // ms between two refreshes of a page's fragments
  var TIMELINE_GAP = 10000; // ms between two drawings of a batch's timeline
  var LOG_KEEP = 2000000; // characters of a followed stream kept in the page

  function each(root, selector, fn) {
    Array.prototype.forEach.call(root.querySelectorAll(selector), fn);
  }

  // -- fragments: fetched again when the store changed ---------------------------------------

  function busy(section) {
    if (section.dataset.following === "1") return true; // its logs are being followed
    var active = document.activeElement;
    if (active && active !== document.body && section.contains(active)) return true;
    return section.querySelector("details[open]") !== null; // a confirmation is open
  }

  function fragmentUrl(name, key) {
    var url = new URL(window.location.href);
    url.hash = "";
    url.searchParams.set("fragment", name);
    if (key) url.searchParams.set("key", key);
    return url;
  }

  function refresh(section) {
    if (busy(section)) return Promise.resolve();
    var url = fragmentUrl(section.dataset.fragment, section.dataset.key);
    return fetch(url, { credentials: "same-origin" })
      .then(function (response) {
        if (response.status !== 200) return null;
        var key = response.headers.get("X-Covey-Key") || "";
        return response.text().then(function (html) {
          if (busy(section)) return;
          section.innerHTML = html; // the server escaped every value in it
          section.dataset.key = key;
          wire(section);
        });
      })
      .catch(function () {});
  }

  var refreshing = false;
  var again = false;
  var lastRefresh = 0;

  function refreshAll() {
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    var wait = Math.max(0, lastRefresh + MIN_GAP - Date.now());
    setTimeout(function () {
      lastRefresh = Date.now();
      var sections = document.querySelectorAll("[data-fragment]");
      Promise.all(Array.prototype.map.call(sections, refresh)).then(function () {
        refreshTimeline();
        refreshing = false;
        if (again) {
          again = false;
          refreshAll();
        }
      });
    }, wait);
  }

  // -- the timeline: drawn by the server, at most every TIMELINE_GAP -----------------------

  var timelineAt = 0;
  var timelineBusy = false;
  var timelineTimer = null;

  function refreshTimeline() {
    var box = document.querySelector("[data-timeline]");
    if (!box || timelineBusy || timelineTimer) return;
    var wait = timelineAt + TIMELINE_GAP - Date.now();
    if (timelineAt && wait > 0) {
      timelineTimer = setTimeout(function () {
        timelineTimer = null;
        refreshTimeline();
      }, wait);
      return;
    }
    timelineBusy = true;
    timelineAt = Date.now();
    var url = new URL(box.dataset.timeline, window.location.href);
    if (box.dataset.key) url.searchParams.set("key", box.dataset.key);
    fetch(url, { credentials: "same-origin" })
      .then(function (response) {
        if (response.status !== 200) return null;
        var key = response.headers.get("X-Covey-Key") || "";
        return response.text().then(function (html) {
          box.querySelector(".picture").innerHTML = html; // drawn and escaped by the server
          box.dataset.key = key;
        });
      })
      .catch(function () {})
      .then(function () {
        timelineBusy = false;
      });
  }

  // -- a running job's output, as the engine gives it ---------------------------------------

  function follow(box) {
    if (box.dataset.started) return;
    box.dataset.started = "1";
    var section = box.closest("[data-fragment]");
    if (section) section.dataset.following = "1";
    var out = {};
    var kept = { stdout: 0, stderr: 0 };
    each(box, "[data-stream]", function (pre) {
      out[pre.dataset.stream] = pre;
    });
    var note = box.querySelector(".note");
    var source = new EventSource(box.dataset.follow);
    source.addEventListener("reset", function () {
      Object.keys(out).forEach(function (name) {
        out[name].textContent = "";
        kept[name] = 0;
      });
    });
    source.addEventListener("log", function (event) {
      var piece = JSON.parse(event.data);
      var pre = out[piece.stream];
      if (!pre) return;
      var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.appendChild(document.createTextNode(piece.text)); // text, never HTML
      kept[piece.stream] += piece.text.length;
      if (kept[piece.stream] > LOG_KEEP) {
        pre.textContent = pre.textContent.slice(-LOG_KEEP);
        kept[piece.stream] = LOG_KEEP;
      }
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    });
    source.addEventListener("note", function (event) {
      if (note) note.textContent = JSON.parse(event.data).text;
    });
    source.addEventListener("done", function () {
      source.close();
      if (!section) return;
      section.dataset.following = "";
      section.dataset.key = "";
      refresh(section); // the logs as the store has them
    });
  }

  function wire(root) {
    each(root, "[data-follow]", follow);
  }

  // -- actions: a POST with the form's CSRF token; fetch sends this page's Origin ----------

  function showError(text) {
    var main = document.querySelector("main");
    var p = document.createElement("p");
    p.className = "flash error";
    p.setAttribute("role", "alert");
    p.textContent = text; // text, never HTML
    main.insertBefore(p, main.firstChild);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form || (form.getAttribute("method") || "").toLowerCase() !== "post") return;
    event.preventDefault();
    var button = form.querySelector("button");
    if (button) button.disabled = true;
    fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        if (response.ok) {
          return response.json().then(function (doc) {
            var to = String(doc.location || "/");
            window.location.assign(to.charAt(0) === "/" && to.charAt(1) !== "/" ? to : "/");
          });
        }
        return response.text().then(function (text) {
          showError(text || response.statusText);
          if (button) button.disabled = false;
        });
      })
      .catch(function (error) {
        showError(String(error));
        if (button) button.disabled = false;
      });
  });

  // -- the store's changes ----------------------------------------------------------------

  function listen() {
    if (!window.EventSource) return;
    var live = document.getElementById("live");
    var lost = false;
    var source = new EventSource("/events");
    source.addEventListener("open", function () {
      if (live) live.className = "live on";
      if (lost) refreshAll(); // changes may have been missed meanwhile
      lost = false;
    });
    source.addEventListener("error", function () {
      if (live) live.className = "live off";
      lost = true;
    });
    source.addEventListener("change", refreshAll);
  }

  wire(document);
  listen();
  refreshTimeline();
})();
