// ComfyUI frontend extension of the Efficient4D pack: the interactive 4D player inside "Preview 4D" nodes, and the
// animated-mesh player inside "Extract Mesh 4D" nodes once they have written a GLB.
// ComfyUI serves this folder (WEB_DIRECTORY = "./web") at /extensions/<pack>/ and imports every .js file in it;
// only this file registers anything. The players live in e4d_player.js and e4d_mesh_player.js (no CDN, offline).
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { E4DPlayer } from "./e4d_player.js";
import { E4DMeshPlayer } from "./e4d_mesh_player.js";

const NODE_ID = "E4D_Preview4D";
const UI_KEY = "e4d_preview"; // nodes/preview.py: io.NodeOutput(ui={UI_KEY: [entry]})
const MESH_NODE_ID = "E4D_ExtractMesh4D";
const MESH_UI_KEY = "e4d_mesh"; // nodes/mesh.py: {filename, subfolder, type: "output"} of the animated GLB

function stopGraphGestures(holder) {
  // Keep the canvas's pointer/wheel gestures away from the graph canvas (no graph pan while orbiting).
  for (const ev of ["pointerdown", "wheel", "contextmenu"]) holder.addEventListener(ev, (e) => e.stopPropagation());
}

function fileUrl(entry) {
  const q = new URLSearchParams({ filename: entry.filename, type: entry.type || "temp",
                                  subfolder: entry.subfolder || "" });
  return api.apiURL(`/view?${q.toString()}`);
}

// Extract Mesh 4D: the mesh player appears on the first result with an animated GLB (a node that never ran, or ran
// without fixed topology, stays compact); later runs load their GLB into the same player.
/** A player of class ``Player`` in a DOM widget of ``node`` (not saved with the workflow); [widget, player]. */
function addPlayerWidget(node, name, type, Player) {
  const holder = document.createElement("div");
  holder.style.cssText = "width:100%;height:100%;min-height:260px;";
  stopGraphGestures(holder);
  const widget = node.addDOMWidget(name, type, holder, {
    serialize: false, hideOnZoom: false, getMinHeight: () => 280,
  });
  return [widget, new Player(holder, { autoplay: true })];
}

function addMeshPlayer(nodeType) {
  const onExecuted = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (output) {
    onExecuted?.apply(this, arguments);
    const entry = output?.[MESH_UI_KEY]?.[0];
    if (!entry) return;
    if (!this.e4dMeshPlayer) {
      [this.e4dMeshWidget, this.e4dMeshPlayer] =
        addPlayerWidget(this, "e4d_mesh_player", "E4D_MESH_PLAYER", E4DMeshPlayer);
      this.setSize([Math.max(this.size[0], 420), this.computeSize()[1]]);
    }
    this.e4dMeshLoading = this.e4dMeshPlayer.load(fileUrl(entry))
      .catch((e) => console.error("[Efficient4D] mesh preview failed:", e));
  };

  const onRemoved = nodeType.prototype.onRemoved;
  nodeType.prototype.onRemoved = function () {
    this.e4dMeshPlayer?.dispose();
    this.e4dMeshPlayer = null;
    return onRemoved?.apply(this, arguments);
  };
}

app.registerExtension({
  name: "efficient4d.preview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name === MESH_NODE_ID) { addMeshPlayer(nodeType); return; }
    if (nodeData?.name !== NODE_ID) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      [this.e4dWidget, this.e4dPlayer] = addPlayerWidget(this, "e4d_player", "E4D_PLAYER", E4DPlayer);
      this.setSize([Math.max(this.size[0], 420), Math.max(this.size[1], 460)]);
      return r;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const entry = output?.[UI_KEY]?.[0];
      if (!entry || !this.e4dPlayer) return;
      this.e4dLoading = this.e4dPlayer.load(fileUrl(entry), {
        background: entry.background, autoplay: entry.autoplay, duration: entry.duration,
      }).catch((e) => console.error("[Efficient4D] preview failed:", e));
    };

    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      this.e4dPlayer?.dispose();
      this.e4dPlayer = null;
      return onRemoved?.apply(this, arguments);
    };
  },
});
