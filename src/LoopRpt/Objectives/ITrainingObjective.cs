using LoopRpt.Model;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LoopRpt.Objectives;

/// <summary>
/// The loss of one micro-batch and its metrics. Metrics are detached device tensors (0-d or 1-d, e.g. one value per
/// loop step), averaged over micro-batches and read to the host only at logging time.
/// </summary>
public sealed class ObjectiveOutput
{
    public ObjectiveOutput(Tensor loss, IReadOnlyDictionary<string, Tensor> metrics)
    {
        Loss = loss;
        Metrics = metrics;
    }

    /// <summary>Scalar loss with its graph.</summary>
    public Tensor Loss { get; }

    /// <summary>Named detached metrics (0-d or 1-d float32 tensors).</summary>
    public IReadOnlyDictionary<string, Tensor> Metrics { get; }

    /// <summary>
    /// Optional. When set, the trainer calls it with the gradient scale (1 / micro-batches per step) instead of running
    /// backward on <c>Loss * scale</c>; the objective then runs backward itself, e.g. in chunks to bound activation memory
    /// (LoopRPT's rollout micro-batching), and <see cref="Loss"/> is a detached value for logging. It is called once,
    /// inside the trainer's dispose scope of the step, before <see cref="Metrics"/> are read.
    /// </summary>
    public Action<double>? Backward { get; init; }
}

/// <summary>What a trainer stage optimizes: Ouro Stage I, Stage II gate training, or LoopRPT.</summary>
public interface ITrainingObjective : IDisposable
{
    /// <summary>Short name used in logs and checkpoint metadata ("pretrain", "gate", "looprpt").</summary>
    string Name { get; }

    /// <summary>Parameters this objective trains (all of them, or the exit gate only).</summary>
    IReadOnlyList<(string Name, Parameter Param)> TrainableParameters(OuroForCausalLM lm);

    /// <summary>Called once before the first step with the model (e.g. to build an EMA teacher).</summary>
    void Attach(OuroForCausalLM lm);

    /// <summary>
    /// Called by the trainer after <see cref="Attach"/> and before the stage's first step (also when a stage resumes from a
    /// checkpoint) with the stage's length, <see cref="Training.TrainingStage.Steps"/>: the one statement of it, for schedules
    /// over the stage such as Stage I's β switch. Default: nothing. An objective that wraps another forwards it.
    /// </summary>
    void BeginStage(long stageSteps) { }

    /// <summary>
    /// Loss of one micro-batch. <paramref name="inputs"/>, <paramref name="targets"/>: (B, S) on the model's device.
    /// <paramref name="step"/> is the global step (it keeps counting across stages and from the base model's meta, so it
    /// suits seeds); <paramref name="stageStep"/> is the 0-based step within this stage (for schedules over the stage,
    /// such as Stage I's beta switch, whose length <see cref="BeginStage"/> gave); <paramref name="microStep"/> is the micro-batch index within the step.
    /// </summary>
    ObjectiveOutput Compute(OuroForCausalLM lm, Tensor inputs, Tensor targets, long step, long stageStep, int microStep);

    /// <summary>After each successful optimizer step (the EMA teacher update lives here).</summary>
    void AfterOptimizerStep(OuroForCausalLM lm, long step);

    /// <summary>
    /// The scalar metric the trainer's loss-spike rule watches (<see cref="Training.LossSpikeRule"/>): one that is
    /// non-negative and falls as training goes well, such as a cross-entropy. Default <c>"loss"</c>; an objective whose
    /// loss can take either sign (a policy-gradient surrogate) names another. A stage whose metrics lack it is not watched.
    /// </summary>
    string SpikeMetric => "loss";

    /// <summary>Extra tensors to checkpoint (e.g. the teacher's weights), by name.</summary>
    IEnumerable<(string Name, Tensor Tensor)> StateTensors();

    /// <summary>Restores <see cref="StateTensors"/>; the callback copies a saved tensor into the given one and returns false if absent.</summary>
    void LoadState(Func<string, Tensor, bool> copyInto);
}
