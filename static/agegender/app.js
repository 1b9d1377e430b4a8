// Progressive enhancement: the pages work without this file.
// Upload page: drag-and-drop and previews. Result pages: poll the JSON status and draw the boxes.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ---- upload: drop zone + previews ---------------------------------------------------------
  var form = document.getElementById("upload-form");
  if (form) {
    var input = form.querySelector("input[type=file]");
    var zone = document.getElementById("dropzone");
    var previews = document.getElementById("previews");
    var accept = (input.getAttribute("accept") || "").split(",");
    var progress = document.getElementById("upload-progress");
    var button = form.querySelector("button[type=submit]");
    var maxFiles = parseInt(form.dataset.maxFiles, 10) || 0;
    var maxBytes = parseInt(form.dataset.maxBytes, 10) || 0;
    var say = function (text, bad) {
      progress.textContent = text;
      progress.className = "upload-progress" + (bad ? " error" : "");
    };
    var tooMany = function () { return maxFiles > 0 && input.files.length > maxFiles; };
    var tooManyText = function () {
      return "At most " + maxFiles + " photos at a time: you chose " + input.files.length + ".";
    };

    var showPreviews = function () {
      previews.innerHTML = "";
      say(tooMany() ? tooManyText() : "", tooMany());
      Array.prototype.forEach.call(input.files, function (file) {
        var item = el("li");
        var ext = "." + file.name.split(".").pop().toLowerCase();
        if (accept.indexOf(ext) === -1) {
          item.appendChild(el("span", { class: "warn" }, "not an accepted type: "));
        } else if (maxBytes > 0 && file.size > maxBytes) {
          item.appendChild(el("span", { class: "warn" }, "too big: "));
        } else {
          var img = el("img", { alt: "" });
          img.addEventListener("error", function () {  // e.g. HEIC, which most browsers cannot show
            item.replaceChild(el("span", { class: "no-preview" }, "no preview"), img);
          });
          img.src = URL.createObjectURL(file);
          item.appendChild(img);
        }
        item.appendChild(document.createTextNode(file.name));
        previews.appendChild(item);
      });
    };
    input.addEventListener("change", showPreviews);
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("dragover"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.remove("dragover"); });
    });
    zone.addEventListener("drop", function (event) {
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        showPreviews();
      }
    });
    // Pictures made on the page (pasted, or the camera's snapshots) join the photos chosen so far.
    var addFiles = function (files) {
      var transfer = new DataTransfer();
      Array.prototype.forEach.call(input.files, function (file) { transfer.items.add(file); });
      files.forEach(function (file) { transfer.items.add(file); });
      input.files = transfer.files;
      showPreviews();
    };
    // A picture pasted on the page (Ctrl+V: a screenshot, an image copied from another page); browsers
    // call every pasted picture "image.png", so each gets its own name.
    var pasted = 0;
    document.addEventListener("paste", function (event) {
      var items = (event.clipboardData && event.clipboardData.files) || [];
      var pictures = Array.prototype.filter.call(items, function (file) { return /^image\//.test(file.type); });
      if (!pictures.length) return;
      event.preventDefault();
      addFiles(pictures.map(function (file) {
        pasted += 1;
        var ext = (file.type.split("/")[1] || "png").replace("jpeg", "jpg");
        return new File([file], "pasted-" + pasted + "." + ext, { type: file.type });
      }));
    });

    // "Take a photo", only where the browser has a camera API: a live preview, then a snapshot (a JPEG)
    // that joins the chosen photos and is sent as they are.
    var camera = document.getElementById("camera");
    if (camera && navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
      var view = document.getElementById("camera-view");
      var video = document.getElementById("camera-video");
      var openButton = document.getElementById("camera-open");
      var cameraStatus = document.getElementById("camera-status");
      var stream = null;
      var snapshots = 0;
      var closeCamera = function () {
        if (stream) stream.getTracks().forEach(function (track) { track.stop(); });
        stream = null;
        video.srcObject = null;
        view.hidden = true;
        openButton.hidden = false;
      };
      camera.hidden = false;
      openButton.addEventListener("click", function () {
        cameraStatus.textContent = "Opening the camera…";
        navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false })
          .then(function (media) {
            stream = media;
            video.srcObject = media;
            view.hidden = false;
            openButton.hidden = true;
            cameraStatus.textContent = "";
          })
          .catch(function (error) {
            cameraStatus.textContent = "No camera could be opened (" + error.name + "). You can still choose photos.";
          });
      });
      document.getElementById("camera-close").addEventListener("click", closeCamera);
      document.getElementById("camera-snap").addEventListener("click", function () {
        if (!video.videoWidth) { cameraStatus.textContent = "The camera is not ready yet."; return; }
        var canvas = document.createElement("canvas");
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        canvas.getContext("2d").drawImage(video, 0, 0);
        canvas.toBlob(function (blob) {
          snapshots += 1;
          addFiles([new File([blob], "camera-" + snapshots + ".jpg", { type: "image/jpeg" })]);
          cameraStatus.textContent = "Photo taken: press Estimate to send it.";
          closeCamera();
        }, "image/jpeg", 0.92);
      });
    }

    // Refusals of a batch none of whose files was accepted, above the form (the files stay chosen).
    var showRefusals = function (data) {
      var old = document.getElementById("upload-errors");
      if (old) old.parentNode.removeChild(old);
      var section = el("section", { class: "outcomes", id: "upload-errors", "aria-label": "Upload results" });
      section.appendChild(el("h2", {}, "Nothing was uploaded"));
      var list = el("ul", { class: "outcome-list" });
      (data.errors || []).forEach(function (text) {
        list.appendChild(el("li", { class: "outcome rejected error" }, text));
      });
      (data.refused || []).forEach(function (refusal) {
        var item = el("li", { class: "outcome rejected" });
        item.appendChild(el("strong", {}, refusal.name));
        item.appendChild(document.createTextNode(" "));
        item.appendChild(el("span", { class: "error" }, refusal.error));
        list.appendChild(item);
      });
      section.appendChild(list);
      form.parentNode.insertBefore(section, form);
    };

    // Upload with a progress line and the button disabled (no double upload), then open the results.
    // The server answers this request with JSON; without this script the form posts and is redirected.
    form.addEventListener("submit", function (event) {
      if (!window.FormData || !window.XMLHttpRequest) return;
      event.preventDefault();
      if (tooMany()) { say(tooManyText(), true); return; }
      button.disabled = true;
      say("Uploading…");
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.getAttribute("action") || window.location.pathname);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) say("Uploading… " + Math.round(100 * e.loaded / e.total) + "%");
      });
      xhr.upload.addEventListener("load", function () { say("Checking the photos…"); });
      xhr.addEventListener("load", function () {
        var data = null;
        try { data = JSON.parse(xhr.responseText); } catch (error) { data = null; }
        if (data && data.location) {
          say("Uploaded. Opening the results…");
          window.location.assign(data.location);
          return;
        }
        button.disabled = false;
        if (data && (data.errors || data.refused)) {  // refused: 400, or 429 (too many this hour)
          say("");
          showRefusals(data);
          return;
        }
        say(xhr.status === 413 ? "The upload is too large for the server: send fewer photos at a time."
          : "The upload failed (error " + xhr.status + "). Please try again.", true);
      });
      xhr.addEventListener("error", function () {
        button.disabled = false;
        say("The upload failed: check your connection and try again.", true);
      });
      xhr.send(new FormData(form));
    });
  }

  // ---- status polling -----------------------------------------------------------------------
  // A page in a background tab asks nothing: its polls wait until it is shown again.
  var parked = [];
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) return;
    var ticks = parked;
    parked = [];
    ticks.forEach(function (tick) { tick(); });
  });

  function poll(url, onUpdate) {
    var delay = 700;
    var tick = function () {
      if (document.hidden) { parked.push(tick); return; }
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (response) { if (!response.ok) throw new Error(response.status); return response.json(); })
        .then(function (data) {
          onUpdate(data);
          if (!data.finished) { delay = Math.min(delay * 1.3, 4000); setTimeout(tick, delay); }
        })
        .catch(function () { delay = Math.min(delay * 2, 10000); setTimeout(tick, delay); });
    };
    setTimeout(tick, delay);
  }

  function setStatus(node, data) {
    node.textContent = data.status_display;
    node.className = "status status-" + data.status;
  }

  function pct(value, total) { return (100 * value / (total || 1)).toFixed(3) + "%"; }

  // One photo's result (`article.result`, from _result_body.html): redraw its boxes and face lines.
  function renderFaces(card, data) {
    var boxes = card.querySelector(".boxes");
    var faces = card.querySelector(".faces");
    var asOneFace = card.querySelector(".as-one-face");
    if (asOneFace) asOneFace.hidden = !(data.status === "done" && !data.faces.length && !data.as_one_face);
    var tryAgain = card.querySelector(".try-again");
    if (tryAgain) tryAgain.hidden = !(data.status === "failed" && data.retryable);
    if (!data.finished) {  // say how far along it is, changing the text only when it changes
      var ahead = data.waiting_ahead;
      var text = (ahead ? "Waiting: " + ahead + " photo" + (ahead === 1 ? "" : "s") + " ahead of this one."
        : "Working on it…") + " This page updates by itself.";
      var waiting = faces.querySelector(".waiting");
      if (!waiting || waiting.textContent !== text) {
        faces.innerHTML = "";
        faces.appendChild(el("p", { class: "waiting" }, text));
      }
      return;
    }
    boxes.innerHTML = "";
    faces.innerHTML = "";
    if (data.status === "failed") {
      faces.appendChild(el("p", { class: "failed" }, "Could not estimate: " + data.error));
      return;
    }
    if (!data.faces.length) {
      faces.appendChild(el("p", { class: "no-faces" }, "No face found in this photo."));
      return;
    }
    var list = el("ol", { class: "face-list" });
    data.faces.forEach(function (face, index) {
      var box = el("div", { class: "box" });
      box.style.left = pct(face.box[0], data.image_width);
      box.style.top = pct(face.box[1], data.image_height);
      box.style.width = pct(face.box[2] - face.box[0], data.image_width);
      box.style.height = pct(face.box[3] - face.box[1], data.image_height);
      box.appendChild(el("span", { class: "box-label" }, (index + 1) + " · " + face.gender + " " + Math.round(face.age)));
      boxes.appendChild(box);
      var item = el("li", { class: "face" });
      item.appendChild(el("span", { class: "age" }, "Age " + Math.round(face.age)));
      item.appendChild(document.createTextNode(" "));
      item.appendChild(el("span", { class: "range" },
        "(" + Math.round(face.age_low) + "–" + Math.round(face.age_high) + ")"));
      item.appendChild(document.createTextNode(", "));
      item.appendChild(el("span", { class: "gender" }, face.gender));
      item.appendChild(document.createTextNode(" "));
      item.appendChild(el("span", { class: "confidence" }, "(" + Math.round(100 * face.gender_confidence) + "% sure)"));
      if (!face.detected) {
        item.appendChild(document.createTextNode(" "));
        item.appendChild(el("span", { class: "undetected" }, "· no face was detected: the whole photo was read as one"));
      }
      list.appendChild(item);
    });
    faces.appendChild(list);
    fitLabels(card);
  }

  // A box's label ("2 · female 34") that would cover another face or label, as where faces are close
  // together or the photo is shown small, is cut to the face's number, which the list below explains.
  function fitLabels(root) {
    Array.prototype.forEach.call(root.querySelectorAll(".boxes"), function (layer) {
      var boxes = layer.querySelectorAll(".box");
      var labels = Array.prototype.map.call(boxes, function (box) {
        var label = box.querySelector(".box-label");
        var full = label.getAttribute("data-full") || label.textContent;
        label.setAttribute("data-full", full);
        label.textContent = full;
        label.classList.remove("short");
        return label;
      });
      var rect = function (node) { return node.getBoundingClientRect(); };
      var boxRects = Array.prototype.map.call(boxes, rect);
      var labelRects = labels.map(rect);
      labels.forEach(function (label, i) {
        var mine = labelRects[i];
        var covers = function (other, j) {
          return j !== i && other.left < mine.right && mine.left < other.right &&
            other.top < mine.bottom && mine.top < other.bottom;
        };
        if (boxRects.some(covers) || labelRects.some(covers)) {
          label.textContent = label.getAttribute("data-full").split(" · ")[0];
          label.classList.add("short");
        }
      });
    });
  }
  fitLabels(document);
  Array.prototype.forEach.call(document.querySelectorAll(".photo-frame img"), function (img) {
    img.addEventListener("load", function () { fitLabels(img.parentNode); });  // its size known at last
  });
  var resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(function () { fitLabels(document); }, 150);
  });

  // The results page of several photos: "N of M photos finished · K faces found".
  var summary = document.getElementById("summary");
  function updateSummary() {
    if (!summary) return;
    var cards = document.querySelectorAll("article.result");
    var finished = 0;
    Array.prototype.forEach.call(cards, function (card) { if (card.dataset.finished === "true") finished += 1; });
    var faceCount = document.querySelectorAll("article.result .face").length;
    summary.querySelector(".finished-count").textContent = finished;
    summary.querySelector(".face-count").textContent = faceCount;
    summary.querySelector(".face-plural").textContent = faceCount === 1 ? "" : "s";
  }

  // Every unfinished result on the page (one on a photo's page, several on an upload's) polls its status.
  Array.prototype.forEach.call(document.querySelectorAll("article.result[data-status-url]"), function (card) {
    if (card.dataset.finished === "true") return;
    poll(card.dataset.statusUrl, function (data) {
      setStatus(card.querySelector(".status"), data);
      card.querySelector(".error").textContent = data.error;
      renderFaces(card, data);
      if (data.finished) {
        card.dataset.finished = "true";
        var placeholder = card.querySelector("img.photo[data-awaits-preview]");
        if (placeholder) {  // a HEIC: the worker has made the JPEG copy browsers can show
          placeholder.removeAttribute("data-awaits-preview");
          placeholder.src = placeholder.src.split("?")[0] + "?read";
        }
        var meta = card.querySelector(".meta");
        if (meta && data.model_version && meta.textContent.indexOf("Model ") === -1) {
          meta.insertBefore(document.createTextNode("Model " + data.model_version + " · "), meta.firstChild);
        }
        updateSummary();
      }
    });
  });

  // The history: a photo still waiting or being read gets its status, face count and faces when done.
  var BRIEF_FACES = 3;  // as predictions.models.BRIEF_FACES
  Array.prototype.forEach.call(document.querySelectorAll("li.history-item[data-status-url]"), function (item) {
    if (item.dataset.finished === "true") return;
    poll(item.dataset.statusUrl, function (data) {
      setStatus(item.querySelector(".status"), data);
      if (!data.finished) return;
      item.dataset.finished = "true";
      var thumb = item.querySelector("img.thumb");  // the worker's thumbnail now (or, failed, no preview)
      thumb.src = thumb.src.split("?")[0] + "?" + data.status;
      if (data.status !== "done") return;
      var count = data.faces.length;
      item.querySelector(".face-count").textContent = count + " face" + (count === 1 ? "" : "s") + " · ";
      var parts = data.faces.slice(0, BRIEF_FACES).map(function (face) {
        return face.gender + " " + Math.round(face.age);
      });
      if (count > BRIEF_FACES) parts.push("+" + (count - BRIEF_FACES) + " more");
      item.querySelector(".faces-brief").textContent = parts.join(", ");
    });
  });

  Array.prototype.forEach.call(document.querySelectorAll("form[data-confirm]"), function (node) {
    node.addEventListener("submit", function (event) {
      if (!window.confirm(node.getAttribute("data-confirm"))) event.preventDefault();
    });
  });
})();
