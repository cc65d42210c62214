// Entry of the three.js bundle web/lib/three_gltf.js: only what web/js/e4d_mesh_player.js uses, so the committed
// bundle stays small (esbuild drops the rest of three.js).
export {
  AmbientLight, AnimationMixer, Box3, Color, DirectionalLight, LoopRepeat, PerspectiveCamera, REVISION, Scene,
  SRGBColorSpace, Vector3, WebGLRenderer,
} from "three";
export { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
