// Progressive enhancement for /build/<id>/log?snapshot=1: follow the log
// over server-sent events. Without this script the snapshot stays as it is,
// and the default log page streams without any script.
(function () {
  "use strict";
  var follow = document.getElementById("log-follow");
  var pre = document.getElementById("log");
  var end = document.getElementById("log-end");
  if (!follow || !pre || !window.EventSource) { return; }
  var es = new EventSource(follow.getAttribute("data-events"));
  es.addEventListener("log", function (e) {
    var m = JSON.parse(e.data);
    var atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 8;
    pre.appendChild(document.createTextNode(m.text));
    if (atBottom) { window.scrollTo(0, document.body.scrollHeight); }
  });
  es.addEventListener("end", function (e) {
    var m = JSON.parse(e.data);
    if (!m.final) { return; }
    es.close();
    if (end) {
      end.textContent = "Build finished: ";
      var badge = document.createElement("span");
      badge.className = "badge state-" + m.state;
      badge.textContent = m.state;
      end.appendChild(badge);
    }
  });
})();
