using System.Net;
using LoopRpt.AI;
using LoopRpt.Inference;
using LoopRpt.Server;
using LoopRpt.Tests.AI;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry;
using OpenTelemetry.Metrics;

namespace LoopRpt.Tests.Server;

[Collection(nameof(ServerCollection))]
public class LimitsAndTelemetryTests
{
    /// <summary>A source whose leases wait for a signal: holds a request in flight for as long as a test needs.</summary>
    private sealed class GatedSource(ILoopRptModelSource inner) : ILoopRptModelSource
    {
        public ManualResetEventSlim Open { get; } = new(false);
        public ManualResetEventSlim Entered { get; } = new(false);
        public string ModelId => inner.ModelId;

        public LoopRptModelLease Acquire()
        {
            Entered.Set();
            Open.Wait(TimeSpan.FromSeconds(30));
            return inner.Acquire();
        }
    }

    [Fact]
    public async Task RequestsBeyondTheConcurrencyLimitGet429()
    {
        using var model = AiTestSupport.Model();
        var gated = new GatedSource(model);
        await using var server = await LoopbackServer.StartAsync(gated, new LoopRptServerOptions { MaxConcurrentRequests = 1 });
        var first = OpenAIServerTests.Post(server, "/v1/completions", """{"prompt":"abc","max_tokens":3}""");
        Assert.True(gated.Entered.Wait(TimeSpan.FromSeconds(30)), "the first request never reached the model");
        var second = await BadInputTests.Send(server.Http, HttpMethod.Post, "/v1/completions", """{"prompt":"abc","max_tokens":3}""");
        Assert.Equal(HttpStatusCode.TooManyRequests, second.Status);
        Assert.Equal("rate_limit_error", second.Json.GetProperty("error").GetProperty("type").GetString());
        Assert.Equal(TimeSpan.FromSeconds(1), second.Response.Headers.RetryAfter?.Delta);
        gated.Open.Set();
        Assert.Equal(HttpStatusCode.OK, (await first).Status);
        Assert.Equal(HttpStatusCode.OK, (await OpenAIServerTests.Post(server, "/v1/completions", """{"prompt":"abc","max_tokens":3}""")).Status);
    }

    [Fact]
    public async Task InferenceAndServerMetersAreExportedThroughOpenTelemetry()
    {
        using var model = AiTestSupport.Model();
        var exported = new List<Metric>();
        var app = LoopRptServer.Build(model, new LoopRptServerOptions { Urls = "http://127.0.0.1:0" },
            configureServices: s => s.AddOpenTelemetry().WithMetrics(m => m.AddInMemoryExporter(exported)));
        await app.StartAsync();
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(app.Addresses()[0]) };
            for (int i = 0; i < 3; i++)
                Assert.True((await http.PostAsync("/v1/completions", new StringContent("""{"prompt":"abc","max_tokens":4,"temperature":0}"""))).IsSuccessStatusCode);
            app.Services.GetRequiredService<MeterProvider>().ForceFlush();
            long Sum(string name) => exported.Where(m => m.Name == name).SelectMany(m =>
            {
                var points = new List<long>();
                foreach (ref readonly var p in m.GetMetricPoints()) points.Add(p.GetSumLong());
                return points;
            }).DefaultIfEmpty(0).Max();
            Assert.Equal(3, Sum("looprpt.server.requests"));
            Assert.True(Sum("looprpt.decode.ticks") > 0, "the LoopRpt.Inference meter was not exported");
            Assert.Contains(exported, m => m.Name == "looprpt.server.request.duration");
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }
}
