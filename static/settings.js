// Progressive enhancement for the settings page. The page works fully without it.
(function () {
  "use strict";

  var form = document.getElementById("settings-form");
  if (!form) {
    return;
  }
  var encryption = form.elements.namedItem("encryption");
  var port = form.elements.namedItem("smtp_port");
  var selfSigned = form.elements.namedItem("allow_selfsigned_certs");
  var conventional = JSON.parse(form.getAttribute("data-conventional-ports") || "{}");
  var portNote = document.getElementById("port-note");
  var selfSignedNote = document.getElementById("selfsigned-note");

  // The port follows the encryption only while it still holds what we (or the
  // convention) put there: a port the person typed is never overwritten.
  var previous = encryption.value;
  encryption.addEventListener("change", function () {
    var current = port.value.trim();
    if (current === "" || Number(current) === conventional[previous]) {
      port.value = String(conventional[encryption.value]);
    }
    previous = encryption.value;
    update();
  });
  port.addEventListener("input", update);

  function update() {
    var plain = encryption.value === "Plain";
    selfSigned.disabled = plain;
    selfSignedNote.hidden = !plain;

    var number = Number(port.value.trim());
    var warning = "";
    if (number === 465 && encryption.value !== "TLS") {
      warning = "Port 465 usually expects TLS from the start, not " + encryption.value + ".";
    } else if (number === 587 && encryption.value === "TLS") {
      warning = "Port 587 usually expects StartTLS, not TLS from the start.";
    } else if (number === 25 && encryption.value === "TLS") {
      warning = "Port 25 usually speaks plain SMTP or StartTLS, not TLS from the start.";
    }
    portNote.textContent = warning;
    portNote.hidden = warning === "";
  }

  form.addEventListener("submit", function (event) {
    // A disabled checkbox is not submitted: enable it so saving keeps its value.
    selfSigned.disabled = false;
    var button = event.submitter;
    var progress = button && document.getElementById(button.getAttribute("data-progress"));
    if (progress) {
      progress.textContent = button.getAttribute("data-busy-text");
      // Disable only after the browser has taken the button's formaction (and name).
      window.setTimeout(function () {
        button.disabled = true;
        button.setAttribute("aria-busy", "true");
      }, 0);
    }
  });

  // Only the sign-in fields of the chosen method are shown. Without JavaScript the OAuth 2.0
  // fields are folded unless OAuth 2.0 is chosen, and the password fields are always there.
  var authMethod = form.elements.namedItem("auth_method");
  function showAuthFields(chosen) {
    var groups = form.querySelectorAll("[data-auth-method]");
    for (var i = 0; i < groups.length; i++) {
      var shown = groups[i].getAttribute("data-auth-method") === authMethod.value;
      groups[i].hidden = !shown;
      if (shown && chosen && groups[i].tagName === "DETAILS") {
        groups[i].open = true;
      }
    }
  }
  authMethod.addEventListener("change", function () {
    showAuthFields(true);
  });
  showAuthFields(false);

  var summary = document.getElementById("error-summary");
  if (summary) {
    summary.focus();
  } else {
    var result = document.getElementById("test-result") || document.getElementById("detect-result");
    if (result) {
      result.scrollIntoView({ block: "center" });
    }
  }

  update();
})();
