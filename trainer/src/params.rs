//! Parameters by name. Every parameter is addressed by its module path (`layers.3.self_attn.q_proj.weight`),
//! which mirrors the Hugging Face tensor name; checkpoints and optimizer state are keyed by it, so they
//! stay readable with any safetensors tool and survive refactors that would renumber burn's `ParamId`s.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::TensorData;
use kiln_arch::{HfTensor, ModulePath};

#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("{origin}: parameter `{name}` is missing")]
    Missing { origin: String, name: String },
    #[error("{origin}: parameter `{name}` has shape {got:?}, the model expects {expected:?}")]
    Shape {
        origin: String,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{origin}: parameters not in the model: {names:?}")]
    Unexpected { origin: String, names: Vec<String> },
}

pub fn tensor_to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("float tensor converts to f32")
}

struct Collect {
    path: ModulePath,
    out: Vec<HfTensor>,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        self.out.push(HfTensor {
            name: self.path.name(),
            shape: t.dims().to_vec(),
            data: tensor_to_vec(t),
        });
    }
}

/// The name of the first tensor holding a NaN or an infinity, if any.
pub fn first_nonfinite(tensors: &[HfTensor]) -> Option<&str> {
    tensors
        .iter()
        .find(|t| !t.data.iter().all(|x| x.is_finite()))
        .map(|t| t.name.as_str())
}

/// Every float parameter with its name, in burn's layout (the checkpoint format).
pub fn named_tensors<B: Backend, M: Module<B>>(module: &M) -> Vec<HfTensor> {
    let mut v = Collect {
        path: ModulePath::default(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// Names and ids of every float parameter, with its rank.
pub fn param_names<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, ParamId, usize)> {
    struct Names {
        path: ModulePath,
        out: Vec<(String, ParamId, usize)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Names {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.out.push((self.path.name(), param.id, D));
        }
    }
    let mut v = Names {
        path: ModulePath::default(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

struct Load<'a> {
    /// Only the parameters whose name passes are loaded (and required); `None`: all.
    only: Option<&'a dyn Fn(&str) -> bool>,
    path: ModulePath,
    tensors: &'a HashMap<String, HfTensor>,
    origin: &'a str,
    used: usize,
    error: Option<ParamsError>,
}

impl<B: Backend> ModuleMapper<B> for Load<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if self.error.is_some() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let name = self.path.name();
        if self.only.is_some_and(|only| !only(&name)) {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let expected = tensor.dims().to_vec();
        let Some(src) = self.tensors.get(&name) else {
            self.error = Some(ParamsError::Missing {
                origin: self.origin.to_string(),
                name,
            });
            return Param::from_mapped_value(id, tensor, mapper);
        };
        if src.shape != expected {
            self.error = Some(ParamsError::Shape {
                origin: self.origin.to_string(),
                name,
                expected,
                got: src.shape.clone(),
            });
            return Param::from_mapped_value(id, tensor, mapper);
        }
        self.used += 1;
        let require_grad = tensor.is_require_grad();
        let device = tensor.device();
        // Stored as f32; keep the parameter's own dtype (bf16 under pure-bf16 training).
        let dtype = kiln_arch::float_dtype(&tensor);
        let mut new = kiln_arch::to_dtype(
            Tensor::<B, D>::from_data(
                TensorData::new(src.data.clone(), src.shape.clone()),
                &device,
            ),
            dtype,
        );
        if require_grad {
            new = new.require_grad();
        }
        Param::from_mapped_value(id, new, mapper)
    }
}

/// Replaces every parameter by the tensor of the same name (checkpoint loading). All names must
/// match exactly, with the same shapes; parameter ids are kept.
pub fn load_named_tensors<B: Backend, M: Module<B>>(
    module: M,
    tensors: &HashMap<String, HfTensor>,
    origin: &str,
) -> Result<M, ParamsError> {
    load_named_where(module, tensors, origin, None)
}

/// [`load_named_tensors`] for the parameters whose name passes `only` (a LoRA checkpoint's
/// adapters); the others keep their values. Exactly those names must be present.
pub fn load_named_subset<B: Backend, M: Module<B>>(
    module: M,
    tensors: &HashMap<String, HfTensor>,
    origin: &str,
    only: &dyn Fn(&str) -> bool,
) -> Result<M, ParamsError> {
    load_named_where(module, tensors, origin, Some(only))
}

fn load_named_where<B: Backend, M: Module<B>>(
    module: M,
    tensors: &HashMap<String, HfTensor>,
    origin: &str,
    only: Option<&dyn Fn(&str) -> bool>,
) -> Result<M, ParamsError> {
    let mut mapper = Load {
        only,
        path: ModulePath::default(),
        tensors,
        origin,
        used: 0,
        error: None,
    };
    let module = module.map(&mut mapper);
    if let Some(e) = mapper.error {
        return Err(e);
    }
    if mapper.used != tensors.len() {
        let known: std::collections::HashSet<String> =
            named_tensors(&module).into_iter().map(|t| t.name).collect();
        let mut names: Vec<String> = tensors
            .keys()
            .filter(|k| !known.contains(*k))
            .cloned()
            .collect();
        names.sort();
        return Err(ParamsError::Unexpected {
            origin: origin.to_string(),
            names,
        });
    }
    Ok(module)
}
