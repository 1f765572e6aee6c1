namespace LoopRpt.Training;

/// <summary>Linear warmup from 0 to the peak rate, then cosine decay to <c>peak × minRatio</c> at the last step.</summary>
public sealed record LearningRateSchedule(double Peak, long TotalSteps, long WarmupSteps, double MinRatio)
{
    /// <summary>Rate for 0-based optimizer step <paramref name="step"/>.</summary>
    public double At(long step)
    {
        if (WarmupSteps > 0 && step < WarmupSteps) return Peak * (step + 1) / WarmupSteps;
        long decaySteps = Math.Max(1, TotalSteps - WarmupSteps - 1);
        double progress = Math.Clamp((double)(step - WarmupSteps) / decaySteps, 0, 1);
        double cosine = 0.5 * (1 + Math.Cos(Math.PI * progress));
        return Peak * (MinRatio + (1 - MinRatio) * cosine);
    }

    public static LearningRateSchedule Create(double peak, long totalSteps, double warmupFraction, double minRatio)
        => new(peak, totalSteps, (long)Math.Ceiling(warmupFraction * totalSteps), minRatio);
}
