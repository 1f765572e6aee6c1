using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Model;

/// <summary>The backbone: embeddings, shared layers, the final norm applied after every loop, and the exit gate.</summary>
public sealed class OuroModel : nn.Module<Tensor, Tensor>
{
    internal readonly OuroEmbedding embed_tokens;
    internal readonly ModuleList<OuroDecoderLayer> layers;
    internal readonly RmsNorm norm;
    internal readonly OuroLinear early_exit_gate;

    public OuroModel(OuroConfig c, Device? device = null, ScalarType dtype = ScalarType.Float32) : base("model")
    {
        embed_tokens = new OuroEmbedding(c.VocabSize, c.HiddenSize, device, dtype);
        layers = new ModuleList<OuroDecoderLayer>(Enumerable.Range(0, c.NumHiddenLayers).Select(i => new OuroDecoderLayer(c, i, device, dtype)).ToArray());
        norm = new RmsNorm(c.HiddenSize, c.RmsNormEps, device: device, dtype: dtype);
        early_exit_gate = new OuroLinear(c.HiddenSize, 1, hasBias: true, device, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => throw new NotSupportedException("Call OuroForCausalLM.Forward.");
}

/// <summary>Options of one forward pass.</summary>
public sealed class LoopForwardOptions
{
    /// <summary>Loops to run (default: the config's total_ut_steps). Fewer loops give the same first steps.</summary>
    public int? Loops { get; init; }

    /// <summary>Position of the first token (for continuing a prefix); default 0.</summary>
    public long PositionOffset { get; init; }

    /// <summary>
    /// Applied to the final-normed state after loop t: its result is what the gate sees and what loop t+1 receives
    /// (LoopRPT's noisy latent rollouts, docs/method.md §4.6). Arguments: state (B, S, H), loop index t.
    /// </summary>
    public Func<Tensor, int, Tensor>? AfterLoop { get; init; }
}

/// <summary>
/// The Ouro looped language model (arXiv 2510.25741): the same decoder layers run T times; after every loop the final
/// norm is applied, its output feeds the next loop, the exit gate scores it, and the LM head can read it out.
/// Module fields carry the reference checkpoint names, so the state dict keys equal the HF keys
/// (<c>model.layers.0.self_attn.q_proj.weight</c>, ..., <c>lm_head.weight</c>).
/// </summary>
public sealed class OuroForCausalLM : nn.Module<Tensor, Tensor>
{
    internal readonly OuroModel model;
    internal readonly OuroLinear lm_head;
    private readonly Rope _rope;
    private BFloat16Compute _bf16Compute = BFloat16Compute.Auto;

    /// <param name="config">The architecture.</param>
    /// <param name="device">Device of the parameters (default CPU).</param>
    /// <param name="dtype">Element type of the parameters.</param>
    /// <param name="generator">Generator of the initial weights (a local one keeps the global RNG untouched).</param>
    /// <param name="initialize">Draw Ouro's initial weights (normal(0, initializer_range), unit norms, zero biases). Loaders
    /// that overwrite every parameter pass false and skip the draw (a 1.4B model's draw is several seconds); the
    /// parameters are then uninitialized memory until loaded (<see cref="OuroLinear"/> draws nothing either).</param>
    public OuroForCausalLM(OuroConfig config, Device? device = null, ScalarType dtype = ScalarType.Float32, Generator? generator = null, bool initialize = true)
        : base("OuroForCausalLM")
    {
        Config = config.Clone().Validate();
        // Parameters are created in their final dtype and device: a bf16 1.4B model never exists in float32.
        model = new OuroModel(Config, device, dtype);
        lm_head = new OuroLinear(Config.HiddenSize, Config.VocabSize, hasBias: false, device, dtype);
        _rope = new Rope(Config.HeadDim, Config.RopeTheta);
        RegisterComponents();
        if (initialize) Initialize(generator);
        // Module.to converts parameters one by one and would split a tie: create a tied model on its final device and dtype.
        if (Config.TieWordEmbeddings) lm_head.ShareWeight(model.embed_tokens.weight);
    }

    public OuroConfig Config { get; }

    public Device Device => model.embed_tokens.weight!.device;

    /// <summary>Element type of the stored parameters.</summary>
    public ScalarType DType => model.embed_tokens.weight!.dtype;

    /// <summary>
    /// How bfloat16 weights compute on a CPU (default <see cref="Model.BFloat16Compute.Auto"/>: chosen from the CPU's
    /// features, <see cref="BFloat16ComputePolicy.Resolve"/>). Ignored for float32 weights and on other devices, which
    /// compute in the weights' own type.
    /// </summary>
    public BFloat16Compute BFloat16Compute
    {
        get => _bf16Compute;
        set => _bf16Compute = Enum.IsDefined(value) ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "Expected Auto, Native or Float32.");
    }

    /// <summary>The bfloat16 compute mode in effect: <see cref="BFloat16Compute"/> resolved for this machine's CPU when the
    /// weights are bfloat16 on the CPU; <see cref="Model.BFloat16Compute.Native"/> (the weights' own type) otherwise.</summary>
    public BFloat16Compute EffectiveBFloat16Compute
        => DType == ScalarType.BFloat16 && Device.type == DeviceType.CPU ? BFloat16ComputePolicy.Resolve(_bf16Compute, CpuFeatures.Current) : BFloat16Compute.Native;

    /// <summary>Element type of activations, norms, attention and KV caches: float32 for bfloat16 weights computed in
    /// float32 (<see cref="EffectiveBFloat16Compute"/>), the weights' type otherwise.</summary>
    public ScalarType ComputeType => EffectiveBFloat16Compute == BFloat16Compute.Float32 ? ScalarType.Float32 : DType;

    internal OuroModel Backbone => model;

    internal OuroLinear LmHead => lm_head;

    internal Rope Rope => _rope;

    /// <summary>Normal(0, initializer_range) for linear and embedding weights, zero biases, unit norms.</summary>
    private void Initialize(Generator? generator)
    {
        using var noGrad = no_grad();
        double std = Config.InitializerRange;
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("layernorm.weight") || name.EndsWith("layernorm_2.weight") || name == "model.norm.weight")
                p.fill_(HeldScalars.One);
            else if (name.EndsWith(".bias"))
                p.zero_();
            else if (p.device.type == DeviceType.CPU)
                p.normal_(0.0, std, generator);   // not nn.init.normal_: in TorchSharp 0.107 it ignores the generator
            else
            {
                // A CPU generator cannot fill a CUDA tensor: draw on the CPU, one parameter at a time, then copy.
                using var draw = empty(p.shape, p.dtype).normal_(0.0, std, generator);
                p.copy_(draw);
            }
        }
    }

    /// <summary>Unique trainable parameters by name (a tied LM head is listed once, as the embedding).</summary>
    public IReadOnlyList<(string Name, Parameter Param)> UniqueParameters()
    {
        // A tied head is the embedding's storage under a second name; list it once, as the embedding (HF convention).
        return named_parameters().Where(np => !(Config.TieWordEmbeddings && np.name == "lm_head.weight")).ToList();
    }

    public override Tensor forward(Tensor inputIds)
    {
        var output = Forward(inputIds);
        return Logits(output.Hidden[^1]);
    }

    /// <summary>Runs the loops on token ids (B, S) and returns per-step hidden states and gate logits.</summary>
    public LoopOutput Forward(Tensor inputIds, LoopForwardOptions? options = null)
    {
        int loops = CheckedLoops(options);
        if (inputIds.dim() != 2) throw new ArgumentException($"Expected token ids of shape (B, S), got ({string.Join(", ", inputIds.shape)}).", nameof(inputIds));
        long offset = options?.PositionOffset ?? 0;
        var (cos, sin) = Positions(offset, inputIds.shape[1], nameof(inputIds));
        return LoopsFrom(FirstLoopState(inputIds, cos, sin), cos, sin, loops, options?.AfterLoop);
    }

    /// <summary>
    /// The final-normed state after loop 0, before any <see cref="LoopForwardOptions.AfterLoop"/> hook: (B, S, H).
    /// Everything up to it depends on the ids alone, so passes that differ only by their hooks (LoopRPT's clean pass and
    /// its noisy rollouts) can compute it once: <c>Forward(ids, o)</c> equals <c>ForwardFrom(FirstLoop(ids), o)</c>.
    /// </summary>
    public Tensor FirstLoop(Tensor inputIds, long positionOffset = 0)
    {
        if (inputIds.dim() != 2) throw new ArgumentException($"Expected token ids of shape (B, S), got ({string.Join(", ", inputIds.shape)}).", nameof(inputIds));
        var (cos, sin) = Positions(positionOffset, inputIds.shape[1], nameof(inputIds));
        return FirstLoopState(inputIds, cos, sin);
    }

    /// <summary>
    /// The rest of a forward from <see cref="FirstLoop"/>'s state (B', S, H): the loop-0 hook and gate, then loops 1..T-1.
    /// A state repeated n times along the batch axis runs n copies of the batch that share loop 0 (and its gradient:
    /// the shared state receives the sum of the copies' gradients).
    /// </summary>
    public LoopOutput ForwardFrom(Tensor firstLoopState, LoopForwardOptions? options = null)
    {
        int loops = CheckedLoops(options);
        if (firstLoopState.dim() != 3 || firstLoopState.shape[2] != Config.HiddenSize)
            throw new ArgumentException($"Expected a state of shape (B, S, {Config.HiddenSize}), got ({string.Join(", ", firstLoopState.shape)}).", nameof(firstLoopState));
        var (cos, sin) = Positions(options?.PositionOffset ?? 0, firstLoopState.shape[1], nameof(firstLoopState));
        return LoopsFrom(firstLoopState, cos, sin, loops, options?.AfterLoop);
    }

    private static int CheckedLoops(LoopForwardOptions? options)
    {
        int loops = options?.Loops ?? -1;
        if (options?.Loops is not null && loops < 1) throw new ArgumentOutOfRangeException(nameof(options), loops, "Loops must be at least 1.");
        return loops;
    }

    private (Tensor Cos, Tensor Sin) Positions(long offset, long s, string paramName)
    {
        if (offset + s > Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(paramName, offset + s, $"Sequence length {offset + s} exceeds max_position_embeddings = {Config.MaxPositionEmbeddings}.");
        return _rope.Get(offset, s, Device, ComputeType);                      // (S, D)
    }

    /// <summary>Embedding, loop 0's layers and the final norm: (B, S) ids → (B, S, H).</summary>
    private Tensor FirstLoopState(Tensor inputIds, Tensor cos, Tensor sin)
    {
        var h = Embed(inputIds);                                        // (B, S, H)
        foreach (var layer in model.layers) h = layer.Forward(h, cos, sin);
        return model.norm.forward(h);                                   // final norm after EVERY loop; feeds loop 1
    }

    /// <summary>Token embeddings in <see cref="ComputeType"/>: ids (...) → (..., H).</summary>
    internal Tensor Embed(Tensor ids)
    {
        var e = model.embed_tokens.forward(ids);
        var type = ComputeType;
        return e.dtype == type ? e : e.to_type(type);
    }

    /// <summary>From loop 0's final-normed state: hook and gate of loop 0, then loops 1.. (loops &lt; 0: the config's count).</summary>
    private LoopOutput LoopsFrom(Tensor state, Tensor cos, Tensor sin, int loops, Func<Tensor, int, Tensor>? hook)
    {
        if (loops < 0) loops = Config.TotalUtSteps;
        var hidden = new List<Tensor>(loops);
        var gates = new List<Tensor>(loops);
        var h = state;
        for (int t = 0; t < loops; t++)
        {
            if (t > 0)
            {
                foreach (var layer in model.layers) h = layer.Forward(h, cos, sin);
                h = model.norm.forward(h);                              // final norm after EVERY loop; feeds loop t+1
            }
            if (hook is not null) h = hook(h, t);
            hidden.Add(h);
            gates.Add(model.early_exit_gate.forward(h));               // (B, S, 1)
        }
        return new LoopOutput(hidden, cat(gates, -1));                 // gate logits (B, S, T)
    }

    /// <summary>LM head on one step's hidden state: (B, S, H) → (B, S, V).</summary>
    public Tensor Logits(Tensor hidden) => lm_head.forward(hidden);

    /// <summary>log softmax(lm_head(hidden))[target] in float32, (B, S). Targets &lt; 0 (ignored) give 0.</summary>
    public Tensor GoldLogProbs(Tensor hidden, Tensor targets)
    {
        var logp = F.log_softmax(Logits(hidden).to_type(ScalarType.Float32), -1);
        var safe = targets.ClampMin(0).unsqueeze(-1);
        return logp.gather(-1, safe).squeeze(-1) * targets.AtLeast(0).to_type(ScalarType.Float32);
    }

    /// <summary>Gold log-probs at every step, (B, S, T), one step's logits alive at a time.</summary>
    public Tensor GoldLogProbsPerStep(LoopOutput output, Tensor targets)
        => stack(output.Hidden.Select(h => GoldLogProbs(h, targets)).ToArray(), -1);

    /// <summary>
    /// Reads out one token choice per position from per-position exit steps: logits of hidden[steps[b, s]], (B, S, V).
    /// Computes the LM head once on the gathered states, not T times.
    /// </summary>
    public Tensor LogitsAtSteps(LoopOutput output, Tensor steps)
    {
        var states = stack(output.Hidden.ToArray(), 2);                              // (B, S, T, H)
        var index = steps.unsqueeze(-1).unsqueeze(-1).expand(-1, -1, 1, states.shape[^1]);
        return Logits(states.gather(2, index).squeeze(2));
    }

    /// <summary>Expected logits sum_t p(t) logits[t], (B, S, V), accumulated one step at a time.</summary>
    public Tensor ExpectedLogits(LoopOutput output)
    {
        var p = output.ExitProbabilities();                                           // (B, S, T)
        Tensor? acc = null;
        for (int t = 0; t < output.Steps; t++)
        {
            var term = Logits(output.Hidden[t]).to_type(ScalarType.Float32) * p.select(-1, t).unsqueeze(-1);
            acc = acc is null ? term : acc.Plus(term);
        }
        return acc!;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _rope.Dispose();
        base.Dispose(disposing);
    }
}
