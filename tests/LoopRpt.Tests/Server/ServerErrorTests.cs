using System.Collections.Concurrent;
using System.Net;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using LoopRpt.Inference;
using LoopRpt.Tests.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace LoopRpt.Tests.Server;

/// <summary>A request that fails inside the server: a 500 in OpenAI's shape with no backtrace, a log line, and a host that goes on.</summary>
[Collection(nameof(ServerCollection))]
public class ServerErrorTests
{
    /// <summary>Fails its first lease as libtorch does under the Scalar race, then serves the model.</summary>
    private sealed class FailingOnceSource(ILoopRptModelSource inner) : ILoopRptModelSource
    {
        public const string NativeMessage = "Unknown scalar type.\nException raised from type at /pytorch/c10/core/Scalar.h:339 (most recent call first):\n"
            + "frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0xb0 (0x7f in /opt/libc10.so)";
        private int _calls;
        public string ModelId => inner.ModelId;

        public LoopRptModelLease Acquire()
            => Interlocked.Increment(ref _calls) == 1 ? throw new ExternalException(NativeMessage) : inner.Acquire();
    }

    private sealed class CapturingLogger(ConcurrentQueue<(LogLevel Level, string Message, Exception? Error)> lines) : ILogger, ILoggerProvider
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => lines.Enqueue((logLevel, formatter(state, exception), exception));
        public ILogger CreateLogger(string categoryName) => this;
        public void Dispose() { }
    }

    [Fact]
    public async Task AFailedRequestAnswersAShortOpenAI500WithAnIdTheLogCarriesAndTheNextRequestIsServed()
    {
        var lines = new ConcurrentQueue<(LogLevel Level, string Message, Exception? Error)>();
        using var model = AiTestSupport.Model();
        await using var server = await LoopbackServer.StartAsync(new FailingOnceSource(model),
            configureServices: s => s.AddLogging(b => b.AddProvider(new CapturingLogger(lines))));
        const string body = """{"model":"tiny-test","messages":[{"role":"user","content":"hello"}],"max_tokens":4,"temperature":0}""";

        using var failed = await server.Http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);
        string text = await failed.Content.ReadAsStringAsync();
        var error = JsonNode.Parse(text)!["error"]!;
        Assert.Equal("server_error", (string?)error["type"]);
        Assert.DoesNotContain("Exception raised from", text);
        Assert.DoesNotContain("/pytorch/", text);
        Assert.DoesNotContain("frame #", text);
        string message = (string)error["message"]!;
        int at = message.IndexOf("err_", StringComparison.Ordinal);
        Assert.True(at >= 0, message);
        string id = "err_" + new string([.. message[(at + 4)..].TakeWhile(char.IsAsciiLetterOrDigit)]);

        var logged = Assert.Single(lines, l => l.Level == LogLevel.Error && l.Message.Contains(id, StringComparison.Ordinal));
        Assert.IsType<ExternalException>(logged.Error);
        Assert.Contains("Scalar.h", logged.Error!.ToString());

        using var served = await server.Http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
    }
}
